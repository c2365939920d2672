"""mlip_prescreen: CHGNet relaxations through the pipeline vs CHGNet's own loop.

The same unique cells (``mlip_campaign.yaml``: charge-balanced ionic compounds of 2-6
atoms and the elemental references) are relaxed (positions and cell, FIRE, fmax 0.05 eV/Å,
at most 300 steps)

* one at a time with CHGNet's ``StructOptimizer`` (its ASE calculator, FrechetCellFilter),
  the baseline, measured before and after the others;
* one at a time with the matdx engine (``ChgnetEngine.calculate``);
* together with the matdx engine (``ChgnetEngine.calculate_many``: one batched model
  evaluation per optimizer step);
* through matdx: store the materials, build the FireWorks workflow, run the pre-screen
  Firework (batched relaxations, space groups, provenance, bulk writes) and the analysis
  Firework (formation energies, hulls) on the embedded store.

The model is loaded before any timing. Goal: pipeline relaxations per second >= 0.95 x
the baseline's.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/mlip_prescreen.py
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def structopt_loop(structures, fmax: float, steps: int) -> float:
    from chgnet.model import StructOptimizer

    from matdx.engines.mlip import load_chgnet

    with contextlib.redirect_stdout(io.StringIO()):
        relaxer = StructOptimizer(model=load_chgnet(), optimizer_class="FIRE", use_device="cpu")
    t0 = time.perf_counter()
    for s in structures:
        relaxer.relax(s, fmax=fmax, steps=steps, relax_cell=True, verbose=False)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--campaign", default=str(HERE / "mlip_campaign.yaml"))
    args = ap.parse_args()
    os.environ.setdefault("MATDX_DATA_DIR", tempfile.mkdtemp(prefix="matdx-bench-"))

    from matdx.core.progress import NullProgress
    from matdx.engines.mlip import load_chgnet
    from matdx.engines.registry import get_engine
    from matdx.workflows.campaign import load_campaign
    from matdx.workflows.context import open_store
    from matdx.workflows.runner import plan_materials, submit_campaign

    loaded = load_campaign(args.campaign)
    p = loaded.spec.prescreen
    store, _ = open_store(None)
    plan = plan_materials(loaded, store, NullProgress())
    structures = [m.structure for m in plan.materials]
    n = len(structures)
    sizes = sorted(len(s) for s in structures)
    print(f"{n} unique cells of {sizes[0]}-{sizes[-1]} atoms (median {sizes[n // 2]})")
    load_chgnet()

    base = [structopt_loop(structures, p.fmax, p.steps)]
    print(f"CHGNet StructOptimizer loop: {base[0]:7.1f} s  {n / base[0]:6.2f} relax/s")
    engine = get_engine("chgnet")
    options = {"optimizer": p.optimizer, "fmax": p.fmax, "steps": p.steps}
    t0 = time.perf_counter()
    alone = [engine.calculate(s, "vc-relax", options) for s in structures]
    t_alone = time.perf_counter() - t0
    print(f"matdx engine, one at a time: {t_alone:7.1f} s  {n / t_alone:6.2f} relax/s")
    t0 = time.perf_counter()
    together = engine.calculate_many(structures, "vc-relax", options)
    t_many = time.perf_counter() - t0
    print(f"matdx engine, batched:       {t_many:7.1f} s  {n / t_many:6.2f} relax/s")
    pairs = zip(alone, together, strict=True)
    worst = max(abs(a.energy_per_atom - b.energy_per_atom) for a, b in pairs)
    print(f"  largest energy difference batched vs one at a time: {worst:.2e} eV/atom")
    t0 = time.perf_counter()
    report = submit_campaign(loaded, plan=plan)
    t_pipe = time.perf_counter() - t0
    done = report.states["candidates"].get("COMPLETED", 0)
    print(f"pipeline (embedded store):   {t_pipe:7.1f} s  {n / t_pipe:6.2f} relax/s "
          f"({done} candidates COMPLETED)")
    base.append(structopt_loop(structures, p.fmax, p.steps))
    print(f"CHGNet StructOptimizer again:{base[1]:7.1f} s  {n / base[1]:6.2f} relax/s")
    mean = statistics.mean(base)
    spread = abs(base[1] - base[0]) / mean
    print(f"baseline spread between its two runs: {100 * spread:.0f} %")
    print(f"pipeline relax/s / baseline relax/s = {mean / t_pipe:.2f}  (goal >= 0.95)")
    print(f"batched gain (engine batched / engine one at a time) = {t_alone / t_many:.2f}")


if __name__ == "__main__":
    main()
