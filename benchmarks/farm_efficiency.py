"""farm_efficiency: the MPI task farm on this machine vs the same work in plain processes.

400 EMT relaxations (a subset, drawn with the seed, of the 830 unique candidates of the
Cu-Au-Pt-Ni-Pd space), in Fireworks of ``--batch`` candidates, run

* in two plain processes (``multiprocessing``, half of them each, no database), each
  calling the task itself: the EMT engine's relaxation (ASE EMT + FrechetCellFilter +
  BFGS, then the space group and the result record), and
* through ``matdx farm`` on two ranks that run the Fireworks (rank 0 also hands them
  out), started the way ``matdx submit`` starts it on this machine: with the farm launcher
  of ``--profile`` (``hpc_profiles/local.yaml``: ``mpiexec -bind-to core:1 -n 2``), in one
  of two modes:

  - ``online``: the ranks claim Fireworks and write results to the database given with
    ``--db`` while they run. Here the database server (FerretDB) shares the two cores
    with the ranks; on a cluster it runs elsewhere.
  - ``offline`` (compute nodes without database access, as on Fugaku): the Fireworks are
    reserved into a job directory before the job (``matdx submit --offline`` does this
    on the login node), the ranks run them from files, and ``matdx sync`` brings the
    results into the store after it. Reserve and sync are timed and reported apart.

Plain and farm runs alternate (``--rounds`` farm runs, offline each on a fresh copy of the
reserved job directory, with a plain run before each and one after the last), because
this shared machine's speed drifts by several per cent within a minute. Efficiency = mean
plain time / mean farm time. Goal >= 90 %. For reference the same relaxations as a
bare ASE loop (no space group, no result record) are timed too, and the farm's time is
also given against them.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/farm_efficiency.py \
        --db mongodb://127.0.0.1:27027/bench_farm --mode offline
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CAMPAIGN = """\
name: bench-farm
seed: 3
chemical_space:
  elements: [Cu, Au, Pt, Ni, Pd]
  max_components: 2
  orderings: {{parents: [fcc, bcc], sizes: [2, 3, 4]}}
prescreen: {{engine: emt, relax_cell: true, optimizer: BFGS, fmax: 0.05, steps: 300}}
batch_size: {batch}
max_candidates: 400
"""


def run_tasks(dicts: list[dict]) -> int:
    """The farm's task without the farm: the EMT engine's relaxation of each structure."""
    from pymatgen.core import Structure

    from matdx.engines.registry import get_engine

    emt = get_engine("emt")
    settings = {"optimizer": "BFGS", "fmax": 0.05, "steps": 300}
    for d in dicts:
        emt.calculate(Structure.from_dict(d), "vc-relax", settings)
    return len(dicts)


def relax_all(dicts: list[dict]) -> int:
    """Bare ASE relaxations of the same structures."""
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
    ap.add_argument("--mode", choices=("online", "offline"), default="online")
    ap.add_argument("--profile", type=Path, default=ROOT / "hpc_profiles" / "local.yaml",
                    help="site profile whose farm launcher starts the two ranks")
    ap.add_argument("--rounds", type=int, default=3,
                    help="offline: farm runs of the same reserved Fireworks, each after a "
                    "plain run (online: 1)")
    args = ap.parse_args()
    os.environ.setdefault("MATDX_DATA_DIR", tempfile.mkdtemp(prefix="matdx-farm-"))
    path = Path(os.environ["MATDX_DATA_DIR"]) / "campaign.yaml"
    path.write_text(CAMPAIGN.format(batch=args.batch))

    from matdx.core.progress import NullProgress
    from matdx.execution.submit import farm_launch_argv
    from matdx.sites import JobRequest, load_profile, resolve_job
    from matdx.workflows.campaign import load_campaign
    from matdx.workflows.context import open_store
    from matdx.workflows.runner import plan_materials, submit_campaign

    loaded = load_campaign(path)
    store, backend = open_store(args.db)
    plan = plan_materials(loaded, store, NullProgress())
    dicts = [m.structure.as_dict() for m in plan.materials]
    print(f"{len(dicts)} relaxations, Fireworks of {args.batch}", flush=True)

    def two_processes(work) -> float:
        t0 = time.perf_counter()
        with get_context("spawn").Pool(2) as pool:
            assert sum(pool.map(work, [dicts[0::2], dicts[1::2]])) == len(dicts)
        return time.perf_counter() - t0

    t_bare = two_processes(relax_all)
    print(f"two processes, bare ASE loop: {t_bare:5.1f} s", flush=True)

    submit_campaign(loaded, launch=False, db_uri=args.db, plan=plan)
    job = resolve_job(load_profile(args.profile),
                      JobRequest(job_name="bench-farm", nodes=1, ranks_per_node=2,
                                 threads_per_rank=1))
    farm = [*farm_launch_argv(job), "-m", "matdx.cli.main", "farm", loaded.spec.name,
            "--task-estimate", "1"]
    print(f"farm: {shlex.join(farm)}", flush=True)
    rounds = args.rounds if args.mode == "offline" else 1
    job_dir = Path(os.environ["MATDX_DATA_DIR"]) / "job"
    if args.mode == "offline":
        from matdx.execution.offline import reserve_job, sync
        from matdx.workflows import fireworks_adapter as fwa

        lp = fwa.get_launchpad(backend)
        t0 = time.perf_counter()
        reserved = reserve_job(lp, store, loaded.spec.name, job_dir, len(dicts))
        print(f"reserve (login node):  {time.perf_counter() - t0:5.1f} s "
              f"({len(reserved)} Fireworks)", flush=True)
        # the launches are recorded in job_dir: each round restores it from this copy
        reserved_dir = job_dir.with_name("job-reserved")
        shutil.copytree(job_dir, reserved_dir)
        farm += ["--offline-dir", str(job_dir)]
    else:
        farm += ["--db", args.db]

    plain, farmed = [], []
    for k in range(rounds):
        plain.append(two_processes(run_tasks))
        print(f"round {k + 1}: the task in two plain processes {plain[-1]:5.1f} s", flush=True)
        if args.mode == "offline":  # every round runs the same reserved Fireworks
            shutil.rmtree(job_dir, ignore_errors=True)
            shutil.copytree(reserved_dir, job_dir)
        t0 = time.perf_counter()
        out = subprocess.run(farm, capture_output=True, text=True, check=True).stdout
        farmed.append(time.perf_counter() - t0)
        print(f"round {k + 1}: matdx farm, 2 workers          {farmed[-1]:5.1f} s  "
              f"{out.strip().splitlines()[-1][-40:]}", flush=True)
    if args.mode == "offline":
        t0 = time.perf_counter()
        synced = sync(lp, store, loaded.spec.name, db_uri=args.db)
        print(f"sync (login node):     {time.perf_counter() - t0:5.1f} s "
              f"({synced.ingested} records)")
    plain.append(two_processes(run_tasks))
    print(f"after: the task in two plain processes {plain[-1]:5.1f} s")
    t_plain, t_farm = statistics.mean(plain), statistics.mean(farmed)
    rounds_eff = [(a + b) / 2 / f for a, b, f in zip(plain[:-1], plain[1:], farmed, strict=True)]
    print(f"mean: plain {t_plain:.2f} s ({len(plain)} runs), farm {t_farm:.2f} s "
          f"({len(farmed)} runs); per round: " + ", ".join(f"{e:.1%}" for e in rounds_eff))
    print(f"efficiency = {t_plain / t_farm:.1%}  (goal >= 90%, {args.mode}); "
          f"against the bare ASE loop {t_bare / t_farm:.1%}")

if __name__ == "__main__":
    main()
