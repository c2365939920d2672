"""Closing the loop: choose what to compute next, and replay campaigns to measure it.

The model predicts the **formation energy** per atom, not the energy above hull. A
formation energy belongs to one material and never changes once computed (the elemental
references are computed first), whereas an energy above hull depends on every other phase
of the chemical system: a label revealed early would be wrong later, or, taken from the
complete data set, would leak the answer. Candidates are ranked instead by their predicted
distance to the hull of what has been computed so far,

    Δ = predicted E_form − E_hull(composition | computed phases),

which the acquisition strategies of :data:`STRATEGIES` combine with the spread of the
ensemble's predictions σ (lower score = computed first). A model of ``energy_above_hull``
is ranked by its raw prediction.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from matdx.ml.features import atomic_fractions, featurize
from matdx.ml.model import TrainedModel, make_model, predict_with_std

Strategy = Callable[[np.ndarray, np.ndarray, np.random.Generator, float], np.ndarray]


Vec = np.ndarray


def _ucb(mean: Vec, std: Vec, rng: np.random.Generator, kappa: float) -> Vec:
    return mean - kappa * std  # lower confidence bound: we minimise


def _greedy(mean: Vec, std: Vec, rng: np.random.Generator, kappa: float) -> Vec:
    return mean


def _uncertainty(mean: Vec, std: Vec, rng: np.random.Generator, kappa: float) -> Vec:
    return -std


def _random(mean: Vec, std: Vec, rng: np.random.Generator, kappa: float) -> Vec:
    return rng.random(len(mean))


STRATEGIES: dict[str, Strategy] = {
    "ucb": _ucb,
    "greedy": _greedy,
    "uncertainty": _uncertainty,
    "random": _random,
}
"""Acquisition scores ``(mean, std, rng, kappa) -> score``; the lowest scores are computed
first. ``mean`` is the predicted distance to the current hull (eV/atom)."""

NEEDS_STD = frozenset({"ucb", "uncertainty"})
NEEDS_MODEL = frozenset(STRATEGIES) - {"random"}


def _check_strategy(strategy: str) -> Strategy:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r} (choose from {', '.join(STRATEGIES)})")
    return STRATEGIES[strategy]


def hull_energies(frac_known: Vec, e_known: Vec, frac_query: Vec) -> Vec:
    """Lower convex hull of known formation energies, evaluated at query compositions.

    Each query is placed on the hull of its own chemical system and subsystems; the pure
    elements count as known at 0 eV/atom.

    Parameters
    ----------
    frac_known, e_known
        Atomic fractions (rows) and formation energies (eV/atom) of computed phases.
    frac_query
        Atomic fractions of the compositions to evaluate, same element columns.

    Returns
    -------
    numpy.ndarray
        Hull formation energy at every query composition (≤ 0).
    """
    from scipy.spatial import ConvexHull

    out = np.zeros(len(frac_query))
    support_q = frac_query > 1e-9
    support_k = frac_known > 1e-9
    systems: dict[tuple[int, ...], list[int]] = {}
    for i, row in enumerate(support_q):
        systems.setdefault(tuple(np.flatnonzero(row)), []).append(i)
    for system, rows in systems.items():
        idx = list(system)
        outside = [j for j in range(frac_known.shape[1]) if j not in system]
        inside = ~support_k[:, outside].any(axis=1)
        pts, energies = frac_known[inside][:, idx], e_known[inside]
        k = len(idx)
        if k == 1:
            out[rows] = min(0.0, float(energies.min())) if len(energies) else 0.0
            continue
        top = max(float(energies.max()) if len(energies) else 0.0, 0.0) + 1.0
        corners = np.eye(k)
        pts = np.vstack([
            np.column_stack([pts[:, 1:], energies]),
            np.column_stack([corners[:, 1:], np.zeros(k)]),
            np.column_stack([corners[:, 1:], np.full(k, top)]),  # a lid: full-dimensional
        ])
        eq = ConvexHull(pts).equations  # normal·x + offset <= 0 inside
        lower = eq[eq[:, -2] < -1e-9]
        q = frac_query[rows][:, idx[1:]]
        planes = -(q @ lower[:, :-2].T + lower[:, -1]) / lower[:, -2]
        out[rows] = np.minimum(planes.max(axis=1), 0.0)
    return out


def on_hull(df: pd.DataFrame, tol: float = 1e-4) -> np.ndarray:
    """Which materials are on the convex hull of the full data (``energy_above_hull <= tol``)."""
    return df["energy_above_hull"].to_numpy(dtype=float) <= tol


def _mean_std(
    model: TrainedModel | Sequence[TrainedModel], x: pd.DataFrame, need_std: bool
) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(model, TrainedModel):
        try:
            return model.predict_with_std(x=x)
        except ValueError:
            if need_std:
                raise
            mean = model.predict(x=x)
            return mean, np.zeros_like(mean)
    preds = np.stack([m.predict(x=x) for m in model])
    return preds.mean(axis=0), preds.std(axis=0)


def _rank(score: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.lexsort((rng.random(len(score)), score))  # random tie-break


def propose(
    model_or_ensemble: TrainedModel | Sequence[TrainedModel],
    df_labelled: pd.DataFrame,
    df_candidates: pd.DataFrame,
    budget: int,
    strategy: str = "ucb",
    seed: int = 0,
    kappa: float = 1.0,
    x_candidates: pd.DataFrame | None = None,
) -> list[str]:
    """The ``budget`` candidates to compute next.

    Parameters
    ----------
    model_or_ensemble
        A trained forest (uncertainty = spread of its trees) or a list of trained models
        (uncertainty = spread of their predictions), all with the same target.
    df_labelled
        Computed materials: ``formula_pretty`` and the model's target column.
    df_candidates
        Materials not computed yet: ``material_id`` and the feature inputs.
    budget
        How many to propose.
    strategy
        Name in :data:`STRATEGIES`.
    seed
        Seed of the random strategy and of tie-breaking.
    kappa
        Weight of the uncertainty in ``"ucb"``.
    x_candidates
        Precomputed features of ``df_candidates``.

    Returns
    -------
    list of str
        ``material_id`` of the chosen candidates, best first.
    """
    acquire = _check_strategy(strategy)
    rng = np.random.default_rng(seed)
    first = model_or_ensemble if isinstance(model_or_ensemble, TrainedModel) else (
        model_or_ensemble[0])
    ids = df_candidates["material_id"].astype(str).to_numpy()
    if strategy in NEEDS_MODEL:
        x = x_candidates if x_candidates is not None else featurize(
            df_candidates, structure=first.metadata.get("structure_features"))[0]
        mean, std = _mean_std(model_or_ensemble, x, strategy in NEEDS_STD)
        if first.target == "formation_energy_per_atom":
            formulas = [*df_labelled["formula_pretty"], *df_candidates["formula_pretty"]]
            _, frac = atomic_fractions(formulas)
            n = len(df_labelled)
            e = df_labelled[first.target].to_numpy(dtype=float)
            mean = mean - hull_energies(frac[:n], e, frac[n:])
    else:
        mean = std = np.zeros(len(ids))
    order = _rank(acquire(mean, std, rng, kappa), rng)
    return ids[order[:budget]].tolist()


def simulate(
    df_all: pd.DataFrame,
    target_fn: Callable[[pd.DataFrame], np.ndarray] = on_hull,
    batch: int = 20,
    initial: int = 20,
    strategy: str = "ucb",
    seed: int = 0,
    fraction: float = 0.9,
    references_first: bool = True,
    model: str = "random_forest",
    model_params: dict[str, Any] | None = None,
    kappa: float = 1.0,
    x: pd.DataFrame | None = None,
    label: str = "formation_energy_per_atom",
    group_by: str | None = "formula_pretty",
) -> dict[str, Any]:
    """Replay a campaign on fully labelled data and count calculations to find the targets.

    The elemental phases (if ``references_first``) and ``initial`` random others are
    computed first. Then, until ``fraction`` of the targets are found, a model of ``label``
    is trained on the computed materials, ``batch`` candidates are chosen by ``strategy``
    (ranked by predicted distance to the hull of the computed phases), and their labels
    are revealed. ``strategy="random"`` is the random-order baseline (no model).

    Parameters
    ----------
    df_all
        Every material with ``material_id``, ``formula_pretty``, feature inputs, ``label``
        and whatever ``target_fn`` reads.
    target_fn
        Boolean mask of the materials to find (default :func:`on_hull`).
    batch, initial
        Calculations per iteration, and random calculations after the references.
    strategy
        Name in :data:`STRATEGIES`.
    seed
        Seed of the initial draw, of the model and of the strategy.
    fraction
        Share of the targets to find.
    references_first
        Compute every single-element material first.
    model, model_params
        Regressor name in :data:`~matdx.ml.model.MODELS` and its parameters.
    kappa
        Uncertainty weight of ``"ucb"``.
    x
        Precomputed features of ``df_all``.
    label
        Modelled column. Other columns than ``formation_energy_per_atom`` are ranked raw;
        ``energy_above_hull`` would reveal distances to the *full* hull (optimistic).
    group_by
        Targets sharing this column's value are one phase, found when any of them is
        computed (two candidates that relaxed into the same crystal, e.g. B2 into L1_0
        along the Bain path, are both on the hull); ``None`` counts every target row.

    Returns
    -------
    dict
        ``n_calcs`` (calculations done when the goal was reached, whole batches),
        ``n_calcs_exact`` (position of the last target needed in the computed order),
        ``n_total``, ``n_targets`` (phases), ``n_needed``, ``curve`` (phases found after
        each batch, as ``[n_calcs, n_found]`` pairs), ``order`` (material ids as computed),
        ``iterations``, ``time_s`` and the settings.
    """
    acquire = _check_strategy(strategy)
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    if x is None:
        x, _ = featurize(df_all)
    arr = x.to_numpy(dtype=float)
    y = df_all[label].to_numpy(dtype=float)
    targets = np.asarray(target_fn(df_all), dtype=bool)
    n = len(df_all)
    keys = df_all[group_by].astype(str).to_numpy() if group_by else np.arange(n).astype(str)
    codes = {k: i for i, k in enumerate(sorted(set(keys[targets])))}
    phase = np.array([codes[k] if t else -1 for k, t in zip(keys, targets, strict=True)])
    n_targets = len(codes)
    n_needed = math.ceil(fraction * n_targets)
    _, frac = atomic_fractions(df_all["formula_pretty"].tolist())
    unary = (frac > 1e-9).sum(axis=1) == 1

    done = np.zeros(n, dtype=bool)
    order: list[int] = []
    found: set[int] = set()
    exact = 0

    def reveal(idx: Sequence[int] | np.ndarray) -> None:
        nonlocal exact
        for i in (int(i) for i in idx if not done[i]):
            done[i] = True
            order.append(i)
            if phase[i] >= 0 and phase[i] not in found:
                found.add(int(phase[i]))
                if len(found) == n_needed:
                    exact = len(order)

    if references_first:
        reveal(np.flatnonzero(unary))
    pool = np.flatnonzero(~done)
    reveal(rng.choice(pool, size=min(initial, len(pool)), replace=False))
    curve = [[len(order), len(found)]]
    iterations = 0
    while curve[-1][1] < n_needed and not done.all():
        cand = np.flatnonzero(~done)
        if strategy in NEEDS_MODEL:
            pipe = make_model(model, seed + iterations, **(model_params or {}))
            pipe.fit(arr[done], y[done])
            if strategy in NEEDS_STD:
                mean, std = predict_with_std(pipe, arr[cand])
            else:
                mean, std = pipe.predict(arr[cand]), np.zeros(len(cand))
            if label == "formation_energy_per_atom":
                mean = mean - hull_energies(frac[done], y[done], frac[cand])
        else:
            mean = std = np.zeros(len(cand))
        pick = cand[_rank(acquire(mean, std, rng, kappa), rng)[:batch]]
        reveal(pick)
        iterations += 1
        curve.append([len(order), len(found)])
    ids = df_all["material_id"].astype(str).to_numpy()
    return dict(
        strategy=strategy, seed=seed, batch=batch, initial=initial, fraction=fraction,
        n_total=n, n_targets=n_targets, n_needed=n_needed, n_calcs=curve[-1][0],
        n_calcs_exact=exact, iterations=iterations, curve=curve, order=ids[order].tolist(),
        time_s=time.perf_counter() - start,
    )


def emt_dataset(
    elements: Sequence[str],
    max_components: int = 3,
    cache: str | Path | None = None,
    progress: Callable[[int], None] | None = None,
    **space: Any,
) -> pd.DataFrame:
    """Generate, deduplicate and EMT-relax a chemical space: a fully labelled data set.

    Parameters
    ----------
    elements
        Elements with EMT parameters.
    max_components
        Most distinct elements per candidate.
    cache
        Parquet file: read if it exists (its elements must be ``elements``), written
        otherwise (structures as JSON text).
    progress
        Called with 1 after every relaxation.
    **space
        Other :class:`~matdx.schemas.campaign.ChemicalSpace` fields.

    Returns
    -------
    pandas.DataFrame
        One row per unique material (elemental fcc/bcc/hcp references included):
        ``material_id``, ``formula_pretty``, ``chemsys``, ``nelements``, ``nsites``,
        ``source``, ``structure`` (generated structure, as a dict), ``structure_relaxed``,
        ``spacegroup_number`` (relaxed), ``energy_per_atom``,
        ``formation_energy_per_atom``, ``energy_above_hull``, ``is_stable``,
        ``volume_per_atom``, ``converged``.
    """
    if cache is not None and Path(cache).exists():
        df = pd.read_parquet(cache)
        for col in ("structure", "structure_relaxed"):
            df[col] = [json.loads(s) for s in df[col]]
        found = {el for cs in df["chemsys"] for el in cs.split("-")}
        if found != set(elements):
            raise ValueError(f"{cache} holds {'-'.join(sorted(found))}, not the elements asked")
        return df
    from matdx.analysis.thermo import EnergyPoint, thermodynamics
    from matdx.core.errors import EngineError
    from matdx.engines.emt.core import relax
    from matdx.generation.candidates import Candidate, decorate, generate_candidates
    from matdx.generation.dedup import deduplicate
    from matdx.generation.prototypes import PROTOTYPES
    from matdx.schemas.campaign import ChemicalSpace

    cs = ChemicalSpace(elements=list(elements), max_components=max_components, **space)
    cands = generate_candidates(cs) + [
        Candidate(f"reference:{name}", c.structure)
        for el in cs.elements
        for name in ("fcc", "bcc", "hcp")
        for c in decorate(PROTOTYPES[name], [el])
    ]
    result = deduplicate([c.structure for c in cands])
    rows, points, seen = [], [], set()
    for rep in result.representatives:
        mid, cand = result.ids[rep], cands[rep]
        if mid in seen:
            continue
        seen.add(mid)
        try:
            r = relax(cand.structure)
        except EngineError:
            continue
        comp = cand.structure.composition
        points.append(EnergyPoint(mid, comp, r.energy_per_atom))
        rows.append({
            "material_id": mid,
            "formula_pretty": comp.reduced_formula,
            "chemsys": "-".join(sorted(el.symbol for el in comp.elements)),
            "nelements": len(comp.elements),
            "nsites": len(cand.structure),
            "source": cand.source,
            "structure": cand.structure.as_dict(),
            "structure_relaxed": r.structure,
            "spacegroup_number": r.spacegroup_number,
            "energy_per_atom": r.energy_per_atom,
            "volume_per_atom": r.volume_per_atom,
            "converged": r.converged,
        })
        if progress is not None:
            progress(1)
    thermo = thermodynamics(points)
    for row in rows:
        t = thermo[row["material_id"]]
        row.update(formation_energy_per_atom=t.formation_energy_per_atom,
                   energy_above_hull=t.energy_above_hull, is_stable=t.is_stable)
    df = pd.DataFrame(rows)
    if cache is not None:
        out = df.copy()
        for col in ("structure", "structure_relaxed"):
            out[col] = [json.dumps(s) for s in out[col]]
        path = Path(cache)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        out.to_parquet(tmp, index=False)
        os.replace(tmp, path)  # readers never see a half-written cache
    return df
