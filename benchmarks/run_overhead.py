"""run_overhead: ``matdx run`` end to end vs the bare ASE loop in as many processes as cores.

400 EMT cell relaxations (a subset, drawn with the seed, of the 830 unique candidates of
the Cu-Au-Pt-Ni-Pd space, elemental references included; BFGS on a FrechetCellFilter,
fmax 0.05, at most 300 steps), timed from the start of a fresh process to its end:

* ``bare``: the relaxations in ``N`` fresh Python processes started at once (``N`` =
  the cores this process may use), each a plain ASE loop over every ``N``-th structure,
  reading the structures from a JSON file (no pymatgen, no database).
* ``matdx run <campaign>`` (the CLI, as a user runs it) on a fresh embedded store, and
  with ``--db`` on a fresh database of a server: generation, deduplication, the store's
  materials, the FireWorks workflow, the batches (relaxation, space group, provenance,
  bulk writes), the analysis (formation energies, hull) and the top-10 table. It
  computes on every core by default (``--workers``).
* with ``--quacc-python``, a peer figure: quacc's EMT ``relax_job`` (``relax_cell``,
  the same optimizer settings) called directly on the same structures in ``N``
  processes, run with that interpreter (quacc in an environment of its own, with its
  default settings, results in a temporary directory).
* with ``--one-process``, also ``matdx run --workers 1`` (everything in one process).

The variants alternate within each round (bare, matdx, ..., and one more bare run at
the end), because this shared machine's speed drifts by several per cent within a
minute; each matdx figure is divided by the mean of the bare runs just before and after
it. Goals: <= 1.10 on the embedded store, <= 1.15 on the server.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/run_overhead.py \
        [--db mongodb://127.0.0.1:27027/bench_run] [--quacc-python /path/to/python] \
        [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

CAMPAIGN = """\
name: bench-run
seed: 3
chemical_space:
  elements: [Cu, Au, Pt, Ni, Pd]
  max_components: 2
  orderings: {parents: [fcc, bcc], sizes: [2, 3, 4]}
prescreen: {engine: emt, relax_cell: true, optimizer: BFGS, fmax: 0.05, steps: 300}
max_candidates: 400
"""

BARE = """\
import json, sys
from ase import Atoms
from ase.calculators.emt import EMT
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS
cells = json.load(open(sys.argv[1]))[int(sys.argv[2])::int(sys.argv[3])]
for c in cells:
    atoms = Atoms(c["symbols"], positions=c["positions"], cell=c["cell"], pbc=True)
    atoms.calc = EMT()
    BFGS(FrechetCellFilter(atoms), logfile=None).run(fmax=0.05, steps=300)
    atoms.get_potential_energy()
"""

QUACC = """\
import json, sys
from ase import Atoms
from quacc.recipes.emt.core import relax_job
cells = json.load(open(sys.argv[1]))[int(sys.argv[2])::int(sys.argv[3])]
for c in cells:
    atoms = Atoms(c["symbols"], positions=c["positions"], cell=c["cell"], pbc=True)
    relax_job(atoms, relax_cell=True, opt_params={"fmax": 0.05, "max_steps": 300})
"""


def cores() -> int:
    """Cores this process may use."""
    return len(os.sched_getaffinity(0))


def plan_cells(campaign: Path) -> list[dict]:
    """The structures ``matdx run`` computes (planned here against an empty store)."""
    from matdx.core.progress import NullProgress
    from matdx.workflows.campaign import load_campaign
    from matdx.workflows.runner import plan_materials

    empty = SimpleNamespace(known_structures=lambda fingerprints: {})
    plan = plan_materials(load_campaign(campaign), empty, NullProgress())
    return [
        {"symbols": [site.specie.symbol for site in m.structure],
         "positions": m.structure.cart_coords.tolist(),
         "cell": m.structure.lattice.matrix.tolist()}
        for m in plan.materials
    ]


def timed(cmds: list[list[str]], env: dict[str, str], cwd: Path) -> float:
    """Wall seconds to run the commands at once (in ``cwd``) until the last one ends."""
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, env=env, cwd=cwd, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for c in cmds]
    for p, c in zip(procs, cmds, strict=True):
        out, err = p.communicate()
        if p.returncode:
            sys.exit(f"{' '.join(c[:4])} failed:\n{err[-2000:]}")
        last = out
    elapsed = time.perf_counter() - t0
    timed.last_output = last  # type: ignore[attr-defined]
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", default=None,
                    help="server base URI (a fresh database is made under it each round)")
    ap.add_argument("--quacc-python", default=None, help="Python with quacc installed")
    ap.add_argument("--one-process", action="store_true",
                    help="also time matdx run --workers 1")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="matdx-run-bench-"))
    campaign = work / "campaign.yaml"
    campaign.write_text(CAMPAIGN)
    cells_file = work / "cells.json"
    cells = plan_cells(campaign)
    cells_file.write_text(json.dumps(cells))
    n = cores()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    env.pop("MATDX_DB_URI", None)
    print(f"{len(cells)} relaxations of cells of "
          f"{min(len(c['symbols']) for c in cells)}-{max(len(c['symbols']) for c in cells)} "
          f"atoms; {n} cores; load average at start {os.getloadavg()[0]:.2f}", flush=True)

    def parts(script: str, python: str = sys.executable) -> list[list[str]]:
        return [[python, "-c", script, str(cells_file), str(i), str(n)] for i in range(n)]

    def matdx_run(*extra: str) -> list[list[str]]:
        data = work / f"data-{uuid.uuid4().hex[:8]}"
        env["MATDX_DATA_DIR"] = str(data)
        return [[sys.executable, "-m", "matdx.cli.main", "run", str(campaign), *extra]]

    variants: dict[str, object] = {"matdx run, embedded": lambda: matdx_run()}
    databases: list[str] = []
    if args.db:
        base = args.db.rstrip("/").rsplit("/", 1)[0]

        def on_server() -> list[list[str]]:
            databases.append(f"bench_run_{uuid.uuid4().hex[:8]}")
            return matdx_run("--db", f"{base}/{databases[-1]}")

        variants["matdx run, server"] = on_server
    if args.one_process:
        variants["matdx run --workers 1, embedded"] = lambda: matdx_run("--workers", "1")
    if args.quacc_python:
        variants[f"quacc relax_job, {n} processes"] = lambda: parts(QUACC, args.quacc_python)

    bare: list[float] = []
    times: dict[str, list[float]] = {k: [] for k in variants}
    bare.append(timed(parts(BARE), env, work))
    print(f"bare ASE loop, {n} processes: {bare[-1]:6.1f} s", flush=True)
    for r in range(args.rounds):
        for name, cmds in variants.items():
            times[name].append(timed(cmds(), env, work))  # type: ignore[operator]
            tail = timed.last_output.strip().splitlines()  # type: ignore[attr-defined]
            state = next((x for x in tail if x.startswith("candidates by state")), "")
            print(f"round {r + 1}: {name:34s} {times[name][-1]:6.1f} s  {state}", flush=True)
            bare.append(timed(parts(BARE), env, work))
            print(f"round {r + 1}: bare ASE loop, {n} processes   {bare[-1]:6.1f} s  "
                  f"(load {os.getloadavg()[0]:.2f})", flush=True)
    # bare runs: one before each variant run and one after the last
    k = len(variants)
    print(f"\nbare loop: mean {statistics.mean(bare):.2f} s, "
          f"{min(bare):.2f}-{max(bare):.2f} s over {len(bare)} runs")
    for i, (name, runs) in enumerate(times.items()):
        ratios = [
            t / ((bare[r * k + i] + bare[r * k + i + 1]) / 2) for r, t in enumerate(runs)
        ]
        print(f"{name:34s} mean {statistics.mean(runs):6.2f} s; ratio to bare: median "
              f"{statistics.median(ratios):.3f}, per round "
              + ", ".join(f"{x:.3f}" for x in ratios))
    print("goals: embedded <= 1.10, server <= 1.15")
    if databases:
        import pymongo

        client = pymongo.MongoClient(base)
        for name in databases:
            client.drop_database(name)


if __name__ == "__main__":
    main()
