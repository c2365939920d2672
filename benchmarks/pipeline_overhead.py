"""pipeline_overhead: EMT relaxations through the whole pipeline vs a bare loop.

The same 2,000 unique cells (``overhead_campaign.yaml``: compounds of 4-8 atoms, elemental
references of 1-2) are relaxed

* in a bare loop in one process (ASE EMT + FrechetCellFilter + BFGS, same settings), and
* through matdx: store the materials, build the FireWorks workflow, run every batch
  Firework (relax, space group, provenance, bulk writes), run the analysis Firework
  (formation energies, hulls) — on the embedded store or a server given with ``--db``.

Planning (generation and deduplication) is timed separately and reported both excluded
and included; ``benchmarks/dedup.py`` and ``benchmarks/generation.py`` measure it against
its own baselines. Goal: pipeline / bare <= 1.10.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pipeline_overhead.py [--db URI]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from ase import Atoms
from ase.calculators.emt import EMT
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS

HERE = Path(__file__).resolve().parent


def bare_loop(structures) -> float:
    t0 = time.perf_counter()
    for s in structures:
        atoms = Atoms([x.specie.symbol for x in s], positions=s.cart_coords,
                      cell=s.lattice.matrix, pbc=True)
        atoms.calc = EMT()
        BFGS(FrechetCellFilter(atoms), logfile=None).run(fmax=0.05, steps=300)
        atoms.get_potential_energy()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", default=None, help="server URI (default: a fresh embedded store)")
    ap.add_argument("--campaign", default=str(HERE / "overhead_campaign.yaml"))
    args = ap.parse_args()
    os.environ.setdefault("MATDX_DATA_DIR", tempfile.mkdtemp(prefix="matdx-bench-"))

    from matdx.core.progress import NullProgress
    from matdx.workflows.campaign import load_campaign
    from matdx.workflows.context import open_store
    from matdx.workflows.runner import plan_materials, submit_campaign

    loaded = load_campaign(args.campaign)
    store, _ = open_store(args.db)
    t0 = time.perf_counter()
    plan = plan_materials(loaded, store, NullProgress())
    t_plan = time.perf_counter() - t0
    structures = [m.structure for m in plan.materials]
    sizes = sorted({len(s) for s in structures})
    print(f"{len(structures)} unique cells of {sizes[0]}-{sizes[-1]} atoms "
          f"(planned from {plan.n_raw} raw candidates in {t_plan:.1f} s)")

    t_bare1 = bare_loop(structures)
    print(f"bare loop:      {t_bare1:8.1f} s")
    t0 = time.perf_counter()
    report = submit_campaign(loaded, db_uri=args.db, plan=plan)
    t_pipe = time.perf_counter() - t0
    done = report.states["candidates"].get("COMPLETED", 0)
    print(f"pipeline:       {t_pipe:8.1f} s  ({done} candidates COMPLETED, "
          f"backend {args.db or 'embedded'})")
    t_bare2 = bare_loop(structures)
    print(f"bare loop again:{t_bare2:8.1f} s")
    bare = (t_bare1 + t_bare2) / 2
    print(f"ratio pipeline / bare loop            = {t_pipe / bare:.3f}  (goal <= 1.10)")
    print(f"ratio (planning + pipeline) / bare    = {(t_plan + t_pipe) / bare:.3f}")
    print(f"per relaxation: bare {1e3 * bare / len(structures):.1f} ms, "
          f"pipeline {1e3 * t_pipe / len(structures):.1f} ms")


if __name__ == "__main__":
    main()
