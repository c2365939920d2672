"""scheduler_calls: batch-system commands used to run a 1,000-task campaign.

A campaign of 1,000 Fireworks (one candidate each) goes to the PJM stand-in (jobs held in
its queue, then deleted) two ways, every ``pjsub``/``pjstat``/``pjdel`` call counted by
wrappers on ``PATH``:

* ``matdx submit`` (task packing: one bulk submission of a few jobs running the MPI farm),
  then one ``matdx`` status query of all its jobs;
* FireWorks' own ``qlaunch rapidfire`` with a matdx-written queue adapter (one job per
  Firework), as a campaign without task packing would run.

    .venv/bin/python benchmarks/scheduler_calls.py --db mongodb://127.0.0.1:27027/bench_calls
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STANDIN = ROOT / "tests" / "pjm_standin"
PROFILE = STANDIN / "profile.yaml"
CAMPAIGN = """\
name: bench-calls
chemical_space: {elements: [Al, Cu, Ag, Au, Ni, Pd, Pt], max_components: 3}
batch_size: 1
max_candidates: 1000
"""


def shims(directory: Path, log: Path) -> None:
    """Wrappers that log each call and run the stand-in command."""
    for cmd in ("pjsub", "pjstat", "pjdel"):
        w = directory / cmd
        w.write_text(f'#!/bin/sh\necho "{cmd} $*" >> "{log}"\nexec "{STANDIN / cmd}" "$@"\n')
        w.chmod(0o755)


def counts(log: Path) -> dict[str, int]:
    if not log.exists():
        return {}
    return dict(collections.Counter(line.split()[0] for line in log.read_text().splitlines()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", required=True, help="MongoDB/FerretDB URI (a fresh database)")
    ap.add_argument("--elapse", default="1h", help="walltime per job")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="matdx-calls-"))
    os.environ["MATDX_DATA_DIR"] = str(work / "data")
    os.environ["PJM_STANDIN_STATE"] = str(work / "pjm")
    os.environ["PJM_STANDIN_RSCGRPS"] = "test:1:3600"
    os.environ["PJM_STANDIN_QUEUE_DELAY"] = "1000000"  # keep the jobs queued
    (work / "bin").mkdir()
    log = work / "calls.log"
    shims(work / "bin", log)
    os.environ["PATH"] = f"{work / 'bin'}{os.pathsep}{os.environ['PATH']}"
    (work / "c.yaml").write_text(CAMPAIGN)

    from matdx.execution.submit import submit
    from matdx.schedulers import scheduler_for
    from matdx.sites import JobRequest, load_profile
    from matdx.workflows.campaign import load_campaign

    profile = load_profile(PROFILE)
    t0 = time.perf_counter()
    report = submit(load_campaign(work / "c.yaml"), PROFILE, {"elapse": args.elapse},
                    db_uri=args.db)
    scheduler = scheduler_for(profile)
    states = scheduler.status(report.job_ids)
    t_matdx = time.perf_counter() - t0
    p = report.packing
    print(f"campaign: {p.n_tasks} tasks")
    print(f"matdx submit: {p.n_jobs} jobs × {p.tasks_per_job} task slots in "
          f"{len(report.job_ids)} submission(s) {report.job_ids}; status {states}")
    print(f"  calls: {counts(log)}  ({t_matdx:.1f} s)")
    for job_id in report.job_ids:
        scheduler.cancel(job_id)
    log.unlink()

    # FireWorks without packing: qlaunch rapidfire, one job per Firework
    from fireworks import FWorker
    from fireworks.queue import queue_launcher
    from fireworks.queue.queue_launcher import rapidfire

    # FireWorks waits QUEUE_UPDATE_INTERVAL (5 s) after every submission; the calls are
    # counted without that wait, which is reported as time instead
    waits = queue_launcher.QUEUE_UPDATE_INTERVAL
    queue_launcher.QUEUE_UPDATE_INTERVAL = 0

    from matdx.schedulers.fireworks_qadapter import make_qadapter
    from matdx.workflows import fireworks_adapter as fwa
    from matdx.workflows.context import open_store

    _, backend = open_store(args.db)
    lp = fwa.get_launchpad(backend)
    # the jobs of matdx submit never ran: the Fireworks are still READY
    qadapter = make_qadapter(profile, JobRequest(elapse=args.elapse))
    t0 = time.perf_counter()
    launch_dir = work / "qlaunch"
    launch_dir.mkdir()
    rapidfire(lp, FWorker(query={"spec._matdx.campaign": "bench-calls"}), qadapter,
              launch_dir=str(launch_dir), nlaunches=p.n_tasks, njobs_queue=p.n_tasks + 10,
              sleep_time=0, strm_lvl="ERROR")
    t_fw = time.perf_counter() - t0
    c = counts(log)
    wait_min = c.get("pjsub", 0) * waits / 60
    print(f"qlaunch rapidfire: {c.get('pjsub', 0)} submissions; calls: {c}  ({t_fw:.1f} s, "
          f"plus {waits} s of FireWorks' wait after each = {wait_min:.0f} min)")
    print(f"ratio of submissions: {c.get('pjsub', 0)} / {len(report.job_ids)}")
    # delete the queued qlaunch jobs: each holds a stand-in supervisor process (~11 MB)
    queued = sorted(f.stem for f in (work / "pjm" / "jobs").glob("*.json"))
    for i in range(0, len(queued), 200):
        subprocess.run([str(STANDIN / "pjdel"), *queued[i : i + 200]], capture_output=True)


if __name__ == "__main__":
    main()
