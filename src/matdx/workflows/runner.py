"""From a campaign file to stored, ranked results: plan, submit and (optionally) run."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from matdx.core.hashing import stable_hash
from matdx.core.progress import NullProgress, ProgressSink
from matdx.core.settings import get_settings
from matdx.generation.candidates import Candidate, count_combinations, decorate, generate_candidates
from matdx.generation.dedup import SYMPREC as DEDUP_SYMPREC
from matdx.generation.dedup import deduplicate
from matdx.generation.prototypes import PROTOTYPES
from matdx.schemas.campaign import CampaignSpec
from matdx.schemas.names import PICK_ID, PRESCREEN, SPEC
from matdx.store.access import Caller
from matdx.store.repository import Governance, NewMaterial, Store
from matdx.workflows.campaign import LoadedCampaign
from matdx.workflows.context import default_db, open_store

REFERENCE_PROTOTYPES = ("fcc", "bcc", "hcp")
"""Elemental phases always computed, so that formation energies have references."""


@dataclass
class RunReport:
    """What ``matdx run`` did."""

    campaign: str
    n_raw: int = 0
    n_unique: int = 0
    n_reused: int = 0
    n_done_before: int = 0
    n_queued_before: int = 0
    n_submitted: int = 0
    wf_id: int | None = None
    states: dict[str, dict[str, int]] = field(default_factory=dict)


def governance(spec: CampaignSpec, user: str) -> Governance:
    """Tier and rights of the records a campaign creates."""
    d = spec.data
    return Governance(
        tier=d.tier,
        owner=d.owner or user,
        groups=tuple(d.groups),
        rights=d.rights,
        export_control=d.export_control,
    )


def owner_reader(gov: Governance) -> Caller:
    """The identity a campaign's deduplication reads the store with: its owner's."""
    return Caller(gov.owner, (gov.owner,))


def candidates_with_references(spec: CampaignSpec, progress: ProgressSink) -> list[Candidate]:
    """The campaign's raw candidates plus the elemental reference phases."""
    space = spec.chemical_space
    with progress.stage("generate", count_combinations(space)) as advance:
        raw = generate_candidates(space, progress=advance)
    refs = [
        c
        for el in space.elements
        for name in REFERENCE_PROTOTYPES
        for c in decorate(PROTOTYPES[name], [el])
    ]
    return raw + [Candidate(f"reference:{c.source}", c.structure) for c in refs]


@dataclass
class Plan:
    """The unique materials of a campaign, before anything is written."""

    materials: list[NewMaterial]
    n_raw: int
    n_reused: int
    reused: frozenset[str] = frozenset()
    """Identifiers of the materials the store holds already (their stored structure is
    the one computed, which may differ from the generated one within dedup's tolerance)."""


def plan_materials(
    loaded: LoadedCampaign,
    store: Store,
    progress: ProgressSink,
    reader: Caller | None = None,
) -> Plan:
    """Generate and deduplicate (against the store too) the materials of a campaign.

    Parameters
    ----------
    loaded
        The campaign.
    store
        The store deduplicated against.
    progress
        Where to show progress.
    reader
        The campaign's owner: deduplication then uses only the stored materials it may
        read. A candidate whose identifier belongs to a record it may not read is given
        an identifier of its own (:func:`owner_scoped_id`) and is computed again, so that
        neither the counts of a run nor its results reveal that record.
    """
    cands = candidates_with_references(loaded.spec, progress)
    known = store.known_structures
    if reader is not None:
        known = partial(store.known_structures, reader=reader)
    with progress.stage("deduplicate", len(cands)) as advance:
        result = deduplicate([c.structure for c in cands], known=known, progress=advance)
    new_ids = [
        result.ids[g[0]] for pos, g in enumerate(result.groups) if pos not in result.known_ids
    ]
    hidden = store.hidden_ids(new_ids, reader) if reader is not None else set()
    materials, reused = [], set()
    for pos, group in enumerate(result.groups):
        rep = group[0]
        mid = result.known_ids.get(pos, result.ids[rep])
        if mid in hidden and reader is not None:
            mid = owner_scoped_id(mid, reader.user)
        elif pos in result.known_ids:
            reused.add(mid)
        materials.append(
            NewMaterial(
                material_id=mid,
                structure=cands[rep].structure,
                fingerprint=result.fingerprints[rep],
                source=cands[rep].source,
                symmetry={
                    "number": int(result.fingerprints[rep].split("|")[1]),
                    # dedup's tolerance: a fraction of the mean atomic spacing
                    "symprec": DEDUP_SYMPREC,
                },
            )
        )
    limit = loaded.spec.max_candidates
    if limit is not None and len(materials) > limit:
        materials = subset(materials, limit, loaded.spec.seed)
    return Plan(materials, len(cands), len(result.known_ids), frozenset(reused))


def owner_scoped_id(material_id: str, owner: str) -> str:
    """The identifier of a material stored again for ``owner`` (see :func:`plan_materials`)."""
    return f"{material_id}-{stable_hash(owner, 8)}"


def subset(materials: list[NewMaterial], limit: int, seed: int) -> list[NewMaterial]:
    """At most ``limit`` materials drawn with ``seed``, elemental references always kept."""
    import numpy as np

    refs = [m for m in materials if len(m.structure.composition.elements) == 1]
    others = [m for m in materials if len(m.structure.composition.elements) > 1]
    take = max(limit - len(refs), 0)
    picked = np.random.default_rng(seed).choice(len(others), size=take, replace=False)
    keep = {id(others[i]) for i in picked} | {id(m) for m in refs}
    return [m for m in materials if id(m) in keep]


def submit_campaign(
    loaded: LoadedCampaign,
    progress: ProgressSink | None = None,
    launch: bool = True,
    db_uri: str | None = None,
    plan: Plan | None = None,
    workers: int | None = None,
) -> RunReport:
    """Plan a campaign, store its materials, add a workflow for what is left, and run it.

    Parameters
    ----------
    loaded
        Validated campaign.
    progress
        Where to show progress.
    launch
        Run the Fireworks in this process; otherwise leave them READY for workers.
    db_uri
        Database URI overriding ``MATDX_DB_URI`` and the campaign's ``store.uri``.
    plan
        Materials already planned with :func:`plan_materials` (planned here if omitted).
    workers
        Processes that compute the pre-screen when launched here (default: every core;
        see :mod:`matdx.workflows.pool`). The results are the same with any number.

    Returns
    -------
    RunReport
        Counts and final states.
    """
    from matdx.workflows.pool import compute_pool

    # the workers start (and import the engines) while this process plans
    with compute_pool(workers if launch else 1):
        return _submit(loaded, progress or NullProgress(), launch, db_uri, plan)


def _submit(
    loaded: LoadedCampaign,
    progress: ProgressSink,
    launch: bool,
    db_uri: str | None,
    plan: Plan | None,
) -> RunReport:
    """:func:`submit_campaign`, within its worker pool (if any)."""
    spec = loaded.spec
    settings = get_settings(db_uri=db_uri or campaign_db_uri(loaded))
    store, backend = open_store(settings.db_uri)
    from matdx.workflows import fireworks_adapter as fwa

    lp = fwa.get_launchpad(backend)
    gov = store.claim_campaign(spec.name, governance(spec, settings.user))
    report = RunReport(spec.name)

    from matdx.workflows.coordination import campaign_lock

    with campaign_lock(lp.db, spec.name):
        plan = plan or plan_materials(loaded, store, progress, reader=owner_reader(gov))
        materials, report.n_raw, report.n_reused = plan.materials, plan.n_raw, plan.n_reused
        report.n_unique = len(materials)
        ids = [m.material_id for m in materials]
        done = store.completed(ids, loaded.settings_hash)
        queued = fwa.queued_material_ids(lp, spec.name)
        report.n_done_before, report.n_queued_before = len(done), len(queued & set(ids))
        todo = [m for m in materials if m.material_id not in done and m.material_id not in queued]
        planned: dict[tuple[str, str], Any] = {}
        if launch:
            with default_db(settings.db_uri):
                planned = _start_computing(loaded, todo, plan.reused, gov)
        store.add_materials(spec.name, materials, gov)
        store.upsert_campaign(
            spec.name,
            loaded.raw,
            gov,
            n_raw=report.n_raw,
            n_unique=report.n_unique,
            n_reused=report.n_reused,
        )
        report.n_submitted = len(todo)
        later = len(loaded.step_plan()) > 1
        if todo or (later and not fwa.active_fireworks(lp, spec.name)):
            # with every candidate done, (re)stage the later steps, which compute only what
            # is missing (e.g. after a step was added to the campaign file)
            report.wf_id = queue_materials(store, lp, loaded, todo, gov)
    backend.flush()
    if launch:
        runs = settings.runs_dir / spec.name
        run_in_process(lp, spec.name, settings.db_uri, runs, progress, later, planned=planned)
        if not todo and not queued and not later:
            from matdx.workflows.analyse import analyse_step

            with default_db(settings.db_uri):
                analyse_step(**analysis_kwargs(loaded, gov))
    report.states = fwa.state_counts(lp, spec.name)
    backend.flush()
    return report


def _start_computing(
    loaded: LoadedCampaign, todo: list[NewMaterial], reused: frozenset[str], gov: Governance
) -> dict[tuple[str, str], Any]:
    """Hand the first pre-screen calculations to the worker pool (if one is open) now.

    The workers compute while this process writes the materials and the workflow; the
    batches take the results when they run (:func:`~matdx.workflows.compute.prefetch_batch`
    holds them by material). At most the first two batches go out ahead.

    Returns
    -------
    dict
        ``(settings_hash, material_id)`` → generated structure of each new material
        (not computed before; its generated structure is the one stored), for
        ``prefetch_batch``'s ``planned``; empty without a pool. A material the store held
        already is computed from its stored structure.
    """
    from matdx.workflows.compute import prefetch_batch
    from matdx.workflows.pool import active_pool

    if active_pool() is None:
        return {}
    step = loaded.step_plan()[0]
    planned = {
        (step["settings_hash"], m.material_id): m.structure
        for m in todo
        if m.material_id not in reused
    }
    first = [{"material_id": m.material_id} for m in todo[: 2 * loaded.spec.batch_size]]
    prefetch_batch(loaded.spec.name, step, first, gov.fields(), planned=planned)
    return planned


def run_in_process(
    lp: Any,
    campaign: str,
    db_uri: str,
    run_dir: Path,
    progress: ProgressSink,
    report_steps: bool = False,
    workers: int | None = 1,
    planned: dict[tuple[str, str], Any] | None = None,
) -> None:
    """Run the campaign's READY Fireworks here, with a progress bar of its candidates.

    The Fireworks run one at a time in this process, which alone reads and writes the
    database; with ``workers`` > 1 (or within a :func:`~matdx.workflows.pool.compute_pool`
    block) the pre-screen's calculations run in worker processes, the next batch's handed
    out before the current one's records are written.

    Parameters
    ----------
    lp
        LaunchPad.
    campaign
        Campaign name.
    db_uri
        Database the steps write to.
    run_dir
        Directory of the launch directories.
    progress
        Where to show progress.
    report_steps
        Also report, one message each time, the materials later steps have finished.
    workers
        Worker processes for the pre-screen (``None``: every core; 1: none, all here),
        unless a pool is open already.
    planned
        Input structures of the materials this process planned as new (see
        :func:`~matdx.workflows.compute.prefetch_batch`).
    """
    from matdx.workflows import fireworks_adapter as fwa
    from matdx.workflows.compute import prefetch_batch
    from matdx.workflows.pool import compute_pool

    base = fwa.state_counts(lp, campaign)["candidates"]
    already = sum(base.get(s, 0) for s in fwa.FINAL_STATES)
    pending = sum(base.get(s, 0) for s in fwa.ACTIVE_STATES)
    with (
        default_db(db_uri),
        compute_pool(workers) as pool,
        progress.stage("calculate", pending) as advance,
    ):
        shown = [already]
        reported: dict[str, int] = {}

        def on_progress(final: int) -> None:
            advance(final - shown[0])
            shown[0] = final
            if report_steps:
                _report_steps(progress, fwa.state_counts(lp, campaign)["steps"], reported)

        ahead = (
            (lambda kwargs: prefetch_batch(**kwargs, planned=planned)) if pool is not None else None
        )
        fwa.run_fireworks(lp, campaign, run_dir, on_progress, ahead=ahead)


def queue_materials(
    store: Store,
    lp: Any,
    loaded: LoadedCampaign,
    materials: list[NewMaterial],
    gov: Governance,
    pick_id: str | None = None,
) -> int:
    """Add the workflow that computes ``materials`` and every later step; return its id.

    Step 0's batches of ``batch_size`` materials (ids only: the structures are read from
    the store's materials when a batch runs, which keeps the Fireworks small, as every
    FireWorks query reads them), its analysis, then a stage Firework per later step (each
    selects from all results when it runs).

    Parameters
    ----------
    store, lp
        Store and LaunchPad of the campaign.
    loaded
        The campaign.
    materials
        Stored materials to pre-screen (none: only the analysis and the later steps).
    gov
        Tier and rights of the records.
    pick_id
        Active-learning pick the materials come from, kept in every Firework's metadata.
    """
    from matdx.workflows import fireworks_adapter as fwa

    plan = loaded.step_plan()
    step0 = json.dumps(plan[0])
    size = loaded.spec.batch_size
    batches = [
        {
            "campaign": loaded.spec.name,
            "step": step0,
            "items": [{"material_id": m.material_id} for m in materials[i : i + size]],
            "governance": gov.fields(),
        }
        for i in range(0, len(materials), size)
    ]
    stages = [
        {"campaign": loaded.spec.name, "step": json.dumps(step), "governance": gov.fields()}
        for step in plan[1:]
    ]
    wf = fwa.campaign_workflow(
        loaded.spec.name, PRESCREEN, batches, analysis_kwargs(loaded, gov), stages
    )
    if pick_id is not None:
        for fw in wf.fws:
            fw.spec[SPEC][PICK_ID] = pick_id
        wf.metadata["matdx_pick"] = pick_id
    wf_id = fwa.add_workflow(lp, wf)
    store.add_workflow(loaded.spec.name, wf_id)
    return wf_id


def analysis_kwargs(loaded: LoadedCampaign, gov: Governance) -> dict[str, Any]:
    """Keyword arguments of step 0's analysis."""
    step0 = json.dumps(loaded.step_plan()[0])
    return {"campaign": loaded.spec.name, "step": step0, "governance": gov.fields()}


def _report_steps(
    progress: ProgressSink, steps: dict[str, dict[str, int]], reported: dict[str, int]
) -> None:
    """One message each time a later step has finished more materials."""
    from matdx.workflows.fireworks_adapter import FINAL_STATES

    for name, counts in steps.items():
        final = sum(counts.get(s, 0) for s in FINAL_STATES)
        if final != reported.get(name):
            reported[name] = final
            failed = counts.get("FIZZLED", 0)
            progress.message(
                f"step {name}: {final}/{sum(counts.values())} materials done"
                + (f" ({failed} in fizzled batches)" if failed else "")
            )


def campaign_db_uri(loaded: LoadedCampaign) -> str | None:
    """The campaign's ``store.uri``, unless ``MATDX_DB_URI`` (which wins) is set."""
    import os

    return None if os.environ.get("MATDX_DB_URI") else loaded.spec.store.uri


__all__ = ["Path", "RunReport", "queue_materials", "submit_campaign"]
