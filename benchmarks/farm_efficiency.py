"""farm_efficiency: the MPI task farm on this machine vs the same work in plain processes.

EMT relaxations of the unique candidates of the Cu-Au-Pt-Ni space (at most 400; the
space has 342), in Fireworks of ``--batch`` candidates, run

* in two plain processes (``multiprocessing``, half of them each, no database), and
* through ``matdx farm`` under ``mpiexec -n 3`` (a master that dispatches and two worker
  ranks that run the Fireworks, writing to the database given with ``--db``).

Efficiency = plain time / farm time. Goal >= 90 %.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/farm_efficiency.py --db mongodb://127.0.0.1:27027/bench_farm
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path

CAMPAIGN = """\
name: bench-farm
seed: 3
chemical_space:
  elements: [Cu, Au, Pt, Ni]
  max_components: 2
  orderings: {{parents: [fcc, bcc], sizes: [2, 3, 4]}}
prescreen: {{engine: emt, relax_cell: true, optimizer: BFGS, fmax: 0.05, steps: 300}}
batch_size: {batch}
max_candidates: 400
"""


def relax_all(dicts: list[dict]) -> int:
    from ase import Atoms
    from ase.calculators.emt import EMT
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS
    from pymatgen.core import Structure

    for d in dicts:
        s = Structure.from_dict(d)
        atoms = Atoms([x.specie.symbol for x in s], positions=s.cart_coords,
                      cell=s.lattice.matrix, pbc=True)
        atoms.calc = EMT()
        BFGS(FrechetCellFilter(atoms), logfile=None).run(fmax=0.05, steps=300)
    return len(dicts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", required=True, help="MongoDB/FerretDB URI (a fresh database)")
    ap.add_argument("--batch", type=int, default=10, help="candidates per Firework")
    args = ap.parse_args()
    os.environ.setdefault("MATDX_DATA_DIR", tempfile.mkdtemp(prefix="matdx-farm-"))
    path = Path(os.environ["MATDX_DATA_DIR"]) / "campaign.yaml"
    path.write_text(CAMPAIGN.format(batch=args.batch))

    from matdx.core.progress import NullProgress
    from matdx.workflows.campaign import load_campaign
    from matdx.workflows.context import open_store
    from matdx.workflows.runner import plan_materials, submit_campaign

    loaded = load_campaign(path)
    store, _ = open_store(args.db)
    plan = plan_materials(loaded, store, NullProgress())
    dicts = [m.structure.as_dict() for m in plan.materials]
    print(f"{len(dicts)} relaxations, Fireworks of {args.batch}", flush=True)

    t0 = time.perf_counter()
    with get_context("spawn").Pool(2) as pool:
        done = sum(pool.map(relax_all, [dicts[0::2], dicts[1::2]]))
    t_plain = time.perf_counter() - t0
    print(f"two plain processes: {t_plain:7.1f} s ({done} relaxations)", flush=True)

    submit_campaign(loaded, launch=False, db_uri=args.db, plan=plan)
    mpiexec = str(Path(sys.executable).parent / "mpiexec")
    t0 = time.perf_counter()
    out = subprocess.run([mpiexec, "-n", "3", sys.executable, "-m", "matdx.cli.main", "farm",
                          loaded.spec.name, "--db", args.db, "--task-estimate", "1"],
                         capture_output=True, text=True, check=True).stdout
    t_farm = time.perf_counter() - t0
    print(f"matdx farm, 2 workers: {t_farm:5.1f} s  {out.strip().splitlines()[-1]}")
    print(f"efficiency = {t_plain / t_farm:.1%}  (goal >= 90%)")


if __name__ == "__main__":
    main()
