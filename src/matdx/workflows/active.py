"""Closing the loop: learn from a campaign's results, choose what to compute next, queue it.

``matdx campaign next`` trains a model (:mod:`matdx.ml`) of the formation energy on the
campaign's results that the caller may read (through the tiered query layer), ranks the
campaign's unique candidates that are neither computed nor queued by an acquisition
strategy (:data:`matdx.ml.STRATEGIES`, on the predicted distance to the hull of what has
been computed), and queues the ``budget`` best as ordinary pre-screen Fireworks plus an
analysis Firework. Every pick is recorded in the store (:mod:`matdx.store.picks`, with the
campaign's tier): model, training-data snapshot, strategy, cross-validated error, and the
predicted mean and spread of every picked material. Its Fireworks carry the pick's id in
``spec._matdx.pick_id``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from matdx.core.errors import InputError
from matdx.core.hashing import stable_hash
from matdx.core.progress import NullProgress, ProgressSink
from matdx.core.settings import get_settings
from matdx.store.access import Caller
from matdx.store.picks import add_pick
from matdx.store.repository import Governance, NewMaterial, Store
from matdx.workflows.campaign import LoadedCampaign
from matdx.workflows.context import open_store
from matdx.workflows.runner import (
    campaign_db_uri,
    owner_reader,
    plan_materials,
    queue_materials,
    run_in_process,
)

TARGET = "formation_energy_per_atom"
"""Modelled column (see :mod:`matdx.ml.active` for why not the energy above hull)."""

MIN_TRAIN = 5
"""Fewest visible results a model is trained on (one per cross-validation fold)."""

CV_FOLDS = 5
FEATURIZE_CHUNK = 100


@dataclass
class NextReport:
    """What ``matdx campaign next`` did."""

    campaign: str
    strategy: str
    budget: int
    pick_id: str | None = None
    snapshot_id: str = ""
    n_train: int = 0
    cv_mae: float | None = None
    cv_mae_std: float | None = None
    n_unique: int = 0
    n_done: int = 0
    n_failed: int = 0
    n_queued: int = 0
    n_pool: int = 0
    picks: list[dict[str, Any]] = field(default_factory=list)
    wf_id: int | None = None
    states: dict[str, dict[str, int]] = field(default_factory=dict)


def training_frame(campaign: str, settings_hash: str, caller: Caller) -> pd.DataFrame:
    """The campaign's results ``caller`` may read, with structures and a known target.

    Parameters
    ----------
    campaign
        Campaign name.
    settings_hash
        Keep results computed with these pre-screen settings only.
    caller
        Who reads: tiers apply, and formation energies derived from records the caller may
        not read are hidden (those rows are dropped).

    Returns
    -------
    pandas.DataFrame
        Columns of :func:`matdx.store.query.frame` plus ``structure`` (the generated
        structure, which is what the model sees for candidates too), sorted by
        ``material_id``.
    """
    from matdx.store.query import MaterialQuery, frame

    df = frame(MaterialQuery(campaign=campaign), caller, with_structures=True)
    y = pd.to_numeric(df[TARGET], errors="coerce")
    keep = np.isfinite(y.to_numpy(dtype=float)) & df["structure"].notna()
    keep &= (df["settings_hash"] == settings_hash).to_numpy()
    out = df[keep].copy()
    out[TARGET] = y[keep].to_numpy(dtype=float)
    # a fixed row order: the same results give the same model on every server
    return out.sort_values("material_id", kind="stable").reset_index(drop=True)


def stored_governance(store: Store, campaign: str) -> Governance:
    """Tier and rights of the stored campaign record (current, after any ``set-tier``)."""
    doc = store.campaign(campaign)
    return Governance(
        tier=doc.tier,
        owner=doc.owner,
        groups=tuple(doc.groups or ()),
        rights=doc.rights,
        export_control=bool(doc.export_control),
    )


def _featurize(df: pd.DataFrame, progress: ProgressSink) -> pd.DataFrame:
    from matdx.ml import featurize

    parts = []
    with progress.stage("featurize", len(df)) as advance:
        for start in range(0, len(df), FEATURIZE_CHUNK):
            chunk = df.iloc[start : start + FEATURIZE_CHUNK]
            parts.append(featurize(chunk, structure=True)[0])
            advance(len(chunk))
    return pd.concat(parts) if parts else featurize(df, structure=True)[0]


def rank_candidates(
    labelled: pd.DataFrame,
    pool: list[NewMaterial],
    budget: int,
    strategy: str = "ucb",
    kappa: float = 1.0,
    seed: int = 0,
    model: str = "random_forest",
    progress: ProgressSink | None = None,
) -> tuple[Any, list[dict[str, Any]]]:
    """Train on ``labelled`` and choose the ``budget`` candidates of ``pool`` to compute.

    Parameters
    ----------
    labelled
        Computed materials: ``material_id``, ``formula_pretty``, ``structure`` and
        :data:`TARGET` (see :func:`training_frame`).
    pool
        Candidates not computed yet.
    budget
        How many to choose.
    strategy
        Name in :data:`matdx.ml.STRATEGIES`.
    kappa
        Weight of the uncertainty in ``"ucb"``.
    seed
        Seed of the model, the cross-validation split, and tie-breaking.
    model
        Name in :data:`matdx.ml.MODELS` (a forest: its trees' spread is the uncertainty).
    progress
        Where to show progress.

    Returns
    -------
    TrainedModel, list of dict
        The model (its metadata has ``snapshot_id`` and ``cv_mae``) and the picks, best
        first: ``material_id``, ``formula_pretty``, ``rank``, ``predicted_mean`` and
        ``predicted_std`` of the formation energy, ``predicted_hull_distance`` (predicted
        formation energy minus the hull of the computed phases at that composition), all in
        eV/atom.
    """
    from matdx.ml import hull_energies, propose, train
    from matdx.ml.features import atomic_fractions

    progress = progress or NullProgress()
    x_train = _featurize(labelled, progress)
    folds = min(CV_FOLDS, len(labelled))
    with progress.stage("train", 1) as advance:
        trained = train(labelled, TARGET, model=model, seed=seed, cv_folds=folds, x=x_train)
        advance(1)
    cands = pd.DataFrame(
        {
            "material_id": [m.material_id for m in pool],
            "formula_pretty": [m.structure.composition.reduced_formula for m in pool],
            "structure": [m.structure for m in pool],
        }
    )
    x_cand = _featurize(cands, progress)
    ids = propose(trained, labelled, cands, budget, strategy, seed, kappa, x_candidates=x_cand)
    mean, std = trained.predict_with_std(x=x_cand)
    _, frac = atomic_fractions([*labelled["formula_pretty"], *cands["formula_pretty"]])
    n = len(labelled)
    hull = hull_energies(frac[:n], labelled[TARGET].to_numpy(dtype=float), frac[n:])
    row = {mid: i for i, mid in enumerate(cands["material_id"])}
    picks = [
        {
            "material_id": mid,
            "formula_pretty": cands["formula_pretty"].iloc[row[mid]],
            "rank": rank,
            "predicted_mean": float(mean[row[mid]]),
            "predicted_std": float(std[row[mid]]),
            "predicted_hull_distance": float(mean[row[mid]] - hull[row[mid]]),
        }
        for rank, mid in enumerate(ids, 1)
    ]
    return trained, picks


def next_batch(
    loaded: LoadedCampaign,
    budget: int,
    strategy: str = "ucb",
    caller: Caller | None = None,
    run: bool = False,
    db_uri: str | None = None,
    progress: ProgressSink | None = None,
    kappa: float = 1.0,
    model: str = "random_forest",
) -> NextReport:
    """Queue (and optionally run) the ``budget`` most promising uncomputed candidates.

    Parameters
    ----------
    loaded
        The campaign, already run at least in part (e.g. with ``max_candidates``).
    budget
        Number of materials to pick.
    strategy
        Acquisition strategy in :data:`matdx.ml.STRATEGIES`: ``ucb`` (predicted distance
        to the hull minus ``kappa`` × spread), ``greedy``, ``uncertainty`` or ``random``.
    caller
        Whose view of the results trains the model (default: the settings' user/groups).
    run
        Run the queued Fireworks (and the analysis) in this process.
    db_uri
        Database URI overriding ``MATDX_DB_URI`` and the campaign's ``store.uri``.
    progress
        Where to show progress.
    kappa
        Weight of the uncertainty in ``ucb``.
    model
        Regressor name in :data:`matdx.ml.MODELS`.

    Returns
    -------
    NextReport
        The pick (empty when every candidate is computed or queued) and final states.

    Raises
    ------
    InputError
        For a budget below 1, an unknown strategy, or fewer than :data:`MIN_TRAIN`
        results the caller may read.
    UnknownCampaignError
        If the campaign is not in the store (or not visible to the caller).
    """
    from matdx.ml import MODELS, STRATEGIES

    if budget < 1:
        raise InputError(f"budget must be at least 1 (got {budget})")
    if strategy not in STRATEGIES:
        raise InputError(f"unknown strategy {strategy!r} (choose from {', '.join(STRATEGIES)})")
    if model not in MODELS:
        raise InputError(f"unknown model {model!r} (choose from {', '.join(MODELS)})")
    progress = progress or NullProgress()
    spec = loaded.spec
    settings = get_settings(db_uri=db_uri or campaign_db_uri(loaded))
    store, backend = open_store(settings.db_uri)
    caller = caller or Caller(settings.user, tuple(settings.groups))
    store.campaign(spec.name, caller)
    labelled = training_frame(spec.name, loaded.settings_hash, caller)
    if len(labelled) < MIN_TRAIN:
        what = "nothing computed yet" if labelled.empty else f"only {len(labelled)} results"
        raise InputError(
            f"campaign {spec.name!r}: {what} that you may read with these pre-screen "
            f"settings; a model needs at least {MIN_TRAIN} (run the campaign first: "
            f"matdx run {loaded.path})"
        )
    from matdx.workflows import fireworks_adapter as fwa
    from matdx.workflows.coordination import campaign_lock

    lp = fwa.get_launchpad(backend)
    gov = stored_governance(store, spec.name)
    report = NextReport(spec.name, strategy, budget, n_train=len(labelled))
    everything = replace(loaded, spec=spec.model_copy(update={"max_candidates": None}))
    with campaign_lock(lp.db, spec.name):
        materials = plan_materials(
            everything, store, progress, reader=owner_reader(gov)
        ).materials
        ids = [m.material_id for m in materials]
        done = store.completed(ids, loaded.settings_hash)
        failed = {c["material_id"] for c in store.calculations(ids, loaded.settings_hash, "failed")}
        queued = fwa.queued_material_ids(lp, spec.name)
        skip = done | failed | queued
        pool = [m for m in materials if m.material_id not in skip]
        report.n_unique, report.n_done = len(materials), len(done)
        report.n_failed, report.n_queued = len(failed - done), len(queued & set(ids))
        report.n_pool = len(pool)
        if pool:
            seed = spec.seed + len(labelled)  # reproducible for the same training data
            trained, picks = rank_candidates(
                labelled, pool, budget, strategy, kappa, seed, model, progress
            )
            meta = trained.metadata
            report.snapshot_id = meta["snapshot_id"]
            report.cv_mae, report.cv_mae_std = meta.get("cv_mae"), meta.get("cv_mae_std")
            report.picks = picks
            report.pick_id = "pick-" + stable_hash(
                [spec.name, report.snapshot_id, strategy, kappa, [p["material_id"] for p in picks]]
            )
            report.wf_id = _queue(store, lp, loaded, pool, picks, gov, report.pick_id)
            pick_gov = pick_governance(store, spec.name, gov, labelled, caller)
            add_pick(_record(report, meta, kappa, seed, pick_gov, caller))
    backend.flush()
    if run and report.wf_id is not None:
        run_in_process(lp, spec.name, settings.db_uri, settings.runs_dir / spec.name, progress)
    report.states = fwa.state_counts(lp, spec.name)
    backend.flush()
    return report


def _queue(
    store: Store,
    lp: Any,
    loaded: LoadedCampaign,
    pool: list[NewMaterial],
    picks: list[dict[str, Any]],
    gov: Governance,
    pick_id: str,
) -> int:
    """Store the picked materials and add their workflow; return its id.

    The workflow is the runner's: pre-screen batches, the analysis, then a stage Firework
    per later step of the campaign (each selects from all results when it runs).
    """
    by_id = {m.material_id: m for m in pool}
    chosen = [by_id[p["material_id"]] for p in picks]
    store.add_materials(loaded.spec.name, chosen, gov)
    return queue_materials(store, lp, loaded, chosen, gov, pick_id)


def _record(
    report: NextReport,
    meta: dict[str, Any],
    kappa: float,
    seed: int,
    gov: dict[str, Any],
    caller: Caller,
) -> dict[str, Any]:
    """The stored record of a pick (a :class:`~matdx.store.documents.PickDoc`)."""
    model = {
        k: meta.get(k)
        for k in (
            "model",
            "params",
            "seed",
            "n_train",
            "cv_mae",
            "cv_mae_std",
            "cv_folds",
            "cv_mae_mean_predictor",
            "features_version",
            "sklearn_version",
            "structure_features",
            "trained_at",
        )
    }
    return {
        "id": report.pick_id,
        "campaign": report.campaign,
        "strategy": report.strategy,
        "kappa": kappa,
        "seed": seed,
        "budget": report.budget,
        "target": TARGET,
        "snapshot_id": report.snapshot_id,
        "cv_mae": report.cv_mae,
        "model": model,
        "n_train": report.n_train,
        "n_unique": report.n_unique,
        "n_done": report.n_done,
        "n_queued": report.n_queued,
        "n_pool": report.n_pool,
        "picks": report.picks,
        "wf_id": report.wf_id,
        "by": caller.user,
        **gov,
    }


def pick_governance(
    store: Store, campaign: str, gov: Governance, labelled: pd.DataFrame, caller: Caller
) -> dict[str, Any]:
    """Governance of a pick: the campaign's, made as restrictive as its training data.

    A model trained on shared-closed or closed results carries what it learnt from them,
    so the pick record takes the most restrictive tier of the results it was trained on
    (see :func:`matdx.store.access.most_restrictive`).
    """
    from matdx.store.access import most_restrictive

    used = set(labelled["material_id"])
    rows = store.summary_rows(campaign, ["tier", "groups", "export_control"], caller)
    inputs = {
        (r.get("tier"), tuple(r.get("groups") or ()), bool(r.get("export_control")))
        for r in rows
        if r["material_id"] in used
    }
    return most_restrictive(
        gov.fields(),
        [{"tier": t, "groups": list(g), "export_control": e} for t, g, e in sorted(inputs)],
    )


__all__ = ["NextReport", "next_batch", "rank_candidates", "training_frame"]
