"""simulate_fugaku: a discrete-event model of one campaign on 1,000 PJM nodes x 48 cores.

Two parts:

1. ``--measure URI``: the protocol's database cost, measured here on the given server
   with pymongo's command monitoring, on a small real campaign (EMT relaxations):

   * online (``matdx farm`` with database access): commands per batch Firework for the
     claim, FireWorks' checkout, the heartbeat, the records and the completion (the same
     ``claim_next`` + ``run_one`` the farm's ranks call), and their mean server time;
   * offline: commands per Firework of ``reserve_job`` and of ``sync``.

   Written to ``--protocol`` (JSON).

2. The simulation, from that file and ``--scale`` (the rates ``benchmarks/scale.py``
   measured): one campaign of ``--candidates`` EMT pre-screen relaxations in batch
   Fireworks of ``--batch`` (one core each), then the ``--qe-fraction`` best as Quantum
   ESPRESSO tasks of one node each, 5-30 min (uniform), in

   * online mode: every worker (a core for EMT, a node for QE) claims, runs and completes
     its Fireworks against one database server, modelled as a single FIFO server of
     ``--db-ops`` commands per second (heartbeats every 10 s per running task take
     their share first). A worker waits for its commands to be served;
   * offline mode: the login node reserves all Fireworks of a stage (at the measured
     reservation rate), one PJM job runs them from files (list scheduling on the free
     cores or nodes), and ``matdx sync`` ingests the records (at the measured sync rate),
     then the next stage.

   Prints the database commands per second, the node idle fraction, the time to solution
   and the number of nodes at which one database server saturates.

Task times: the EMT relaxation time per candidate is the mean measured here (``--emt-s``,
a lognormal spread of sigma 0.5) times ``--core-slowdown`` (an A64FX core running Python
and ASE relative to this machine's: an assumption, 2 by default).

    .venv/bin/python benchmarks/simulate_fugaku.py --measure mongodb://127.0.0.1:27027/ \
        --protocol protocol.json
    .venv/bin/python benchmarks/simulate_fugaku.py --protocol protocol.json --scale scale.json
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

CAMPAIGN = """\
name: sim-protocol
seed: 2
chemical_space:
  elements: [Cu, Au, Pt]
  max_components: 2
  orderings: {parents: [fcc], sizes: [2, 3]}
prescreen: {engine: emt, relax_cell: true, optimizer: BFGS, fmax: 0.05, steps: 300}
batch_size: 4
"""
HEARTBEAT_S = 10.0


class Commands:
    """A pymongo command listener: commands and server time by phase."""

    def __init__(self) -> None:
        self.phase = "setup"
        self.count: Counter[str] = Counter()
        self.seconds: Counter[str] = Counter()
        self.names: dict[str, Counter[str]] = {}

    def started(self, event) -> None:
        self.count[self.phase] += 1
        self.names.setdefault(self.phase, Counter())[event.command_name] += 1

    def succeeded(self, event) -> None:
        self.seconds[self.phase] += event.duration_micros / 1e6

    def failed(self, event) -> None:
        self.seconds[self.phase] += event.duration_micros / 1e6


def measure(uri: str) -> dict:
    """The protocol's commands per Firework, online and offline (see the module docstring)."""
    from pymongo import monitoring

    listener = Commands()
    monitoring.register(type("L", (monitoring.CommandListener,), {
        "started": lambda s, e: listener.started(e),
        "succeeded": lambda s, e: listener.succeeded(e),
        "failed": lambda s, e: listener.failed(e),
    })())
    work = Path(tempfile.mkdtemp(prefix="matdx-sim-"))
    os.environ["MATDX_DATA_DIR"] = str(work)
    (work / "c.yaml").write_text(CAMPAIGN)

    from matdx.execution.offline import reserve_job, run_offline_dir, sync
    from matdx.schemas.names import NODE_KINDS
    from matdx.workflows import fireworks_adapter as fwa
    from matdx.workflows.campaign import load_campaign
    from matdx.workflows.context import default_db, open_store
    from matdx.workflows.runner import submit_campaign

    out = {}
    for mode in ("online", "offline"):
        db = uri.rstrip("/") + f"/sim_protocol_{mode}_{time.strftime('%H%M%S')}"
        loaded = load_campaign(work / "c.yaml")
        listener.phase = "setup"
        submit_campaign(loaded, launch=False, db_uri=db)
        store, backend = open_store(db)
        lp = fwa.get_launchpad(backend)
        n_fw = lp.fireworks.count_documents({"state": "READY"})
        if mode == "online":
            listener.phase = "online"
            t0 = time.perf_counter()
            with default_db(db):
                fwa.run_fireworks(lp, loaded.spec.name, work / "runs", kinds=NODE_KINDS)
            wall = time.perf_counter() - t0
            out["online"] = {"fireworks": n_fw, "commands": listener.count["online"],
                             "server_s": listener.seconds["online"], "wall_s": wall,
                             "by_name": dict(listener.names["online"])}
        else:
            listener.phase = "reserve"
            dirs = reserve_job(lp, store, loaded.spec.name, work / "job", 10**6)
            listener.phase = "compute"
            for d in dirs:
                run_offline_dir(str(d))
            listener.phase = "sync"
            sync(lp, store, loaded.spec.name, run_dir=work / "runs-off", db_uri=db)
            out["offline"] = {"fireworks": len(dirs),
                              **{f"{p}_commands": listener.count[p] for p in ("reserve", "sync")},
                              **{f"{p}_server_s": listener.seconds[p] for p in ("reserve", "sync")},
                              "compute_commands": listener.count["compute"]}
    return out


def online(tasks: np.ndarray, workers: int, ops_start: float, ops_end: float,
           db_ops: float) -> dict:
    """Workers claim/run/complete ``tasks`` (seconds) against one FIFO database server.

    Each task needs ``ops_start`` commands served before it runs (claim, checkout) and
    ``ops_end`` after (records, completion); the server serves requests in the order they
    arrive. Heartbeats (one command per worker every 10 s) are served first: the
    protocol's commands get the capacity left, ``db_ops - workers / 10``.
    """
    capacity = db_ops - workers / HEARTBEAT_S
    if capacity <= 0:
        return {"saturated": True}
    events = [(0.0, 0, w) for w in range(workers)]  # (time, 0: wants a task / 1: done, worker)
    heapq.heapify(events)
    todo = list(tasks[::-1])
    running: dict[int, float] = {}
    free_at = busy = 0.0
    end = 0.0
    while events:
        t, kind, w = heapq.heappop(events)
        if kind == 0 and not todo:
            continue
        ops = ops_start if kind == 0 else ops_end
        served = max(t, free_at) + ops / capacity
        free_at = served
        if kind == 0:
            running[w] = todo.pop()
            busy += running[w]
            heapq.heappush(events, (served + running[w], 1, w))
        else:
            end = max(end, served)
            heapq.heappush(events, (served, 0, w))
    n = len(tasks)
    total_ops = n * (ops_start + ops_end) + float(tasks.sum()) / HEARTBEAT_S
    return {"makespan_s": end, "idle": 1 - busy / (workers * end),
            "db_ops_per_s": total_ops / end, "db_busy": (n * (ops_start + ops_end) / capacity
                                                         + float(tasks.sum()) / HEARTBEAT_S
                                                         / db_ops) / end}


def offline(tasks: np.ndarray, workers: int) -> dict:
    """List scheduling of ``tasks`` on ``workers`` (longest first, as reserved)."""
    ends = np.zeros(workers)
    heap = [(0.0, w) for w in range(workers)]
    for t in tasks:
        now, w = heapq.heappop(heap)
        ends[w] = now + t
        heapq.heappush(heap, (now + t, w))
    makespan = float(ends.max())
    return {"makespan_s": makespan, "idle": 1 - float(tasks.sum()) / (workers * makespan)}


def simulate(args: argparse.Namespace, proto: dict, rates: dict) -> dict:
    rng = np.random.default_rng(0)
    cores = args.nodes * 48
    n_fw = -(-args.candidates // args.batch)
    mean = args.emt_s * args.core_slowdown
    per_cand = rng.lognormal(np.log(mean) - 0.125, 0.5, size=(n_fw, args.batch))
    emt = per_cand.sum(axis=1)
    n_qe = int(args.candidates * args.qe_fraction)
    qe = rng.uniform(300, 1800, size=n_qe)
    on = proto["online"]
    per_fw = on["commands"] / on["fireworks"]
    # heartbeats are counted by the model; the measured count holds those of a short task
    ops_start, ops_end = 0.5 * per_fw, 0.5 * per_fw
    res: dict = {"fireworks": n_fw, "qe_tasks": n_qe, "cores": cores,
                 "commands_per_firework_online": round(per_fw, 1)}
    # both modes hand out the longest tasks first
    emt, qe = np.sort(emt)[::-1], np.sort(qe)[::-1]
    o1 = online(emt, cores, ops_start, ops_end, args.db_ops)
    o2 = online(qe, args.nodes, ops_start, ops_end, args.db_ops)
    res["online"] = {"emt": o1, "qe": o2}
    if not o1.get("saturated") and not o2.get("saturated"):
        res["online"]["time_to_solution_h"] = (o1["makespan_s"] + o2["makespan_s"]) / 3600
    f1, f2 = offline(emt, cores), offline(qe, args.nodes)
    reserve = (n_fw + n_qe) / rates["reserve_fw_per_s"]
    sync = (args.candidates + n_qe) / rates["sync_records_per_s"]
    res["offline"] = {"emt": f1, "qe": f2, "reserve_s": reserve, "sync_s": sync,
                      "time_to_solution_h": (f1["makespan_s"] + f2["makespan_s"] + reserve
                                             + sync + rates.get("hull_s", 0)) / 3600}
    # where one server saturates: commands per second against the number of nodes
    res["saturation_nodes"] = {}
    for label, t_task, per_worker in (("emt", float(emt.mean()), 48),
                                      ("qe", float(qe.mean()), 1)):
        demand_per_node = per_worker * (per_fw / t_task + 1 / HEARTBEAT_S)
        res["saturation_nodes"][label] = args.db_ops / demand_per_node
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--measure", metavar="URI", help="measure the protocol on this server")
    ap.add_argument("--protocol", type=Path, default=Path("protocol.json"))
    ap.add_argument("--scale", type=Path, help="scale.py's results (reservation and sync rates)")
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--candidates", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, nargs="+", default=[5, 20, 50, 200],
                    help="EMT candidates per Firework (one simulation each)")
    ap.add_argument("--qe-fraction", type=float, default=0.01)
    ap.add_argument("--emt-s", type=float, default=0.103,
                    help="mean EMT relaxation here (pipeline_overhead's bare loop: 103 ms)")
    ap.add_argument("--core-slowdown", type=float, default=2.0)
    ap.add_argument("--db-ops", type=float, default=20_000,
                    help="commands per second one database server sustains (assumption)")
    args = ap.parse_args()
    if args.measure:
        proto = measure(args.measure)
        args.protocol.write_text(json.dumps(proto, indent=1))
        print(json.dumps(proto, indent=1))
        return
    proto = json.loads(args.protocol.read_text())
    rates = {"reserve_fw_per_s": 500.0, "sync_records_per_s": 2000.0}
    if args.scale:
        rows = sorted(json.loads(args.scale.read_text()).values(), key=lambda r: r["n_unique"])
        big = rows[-1]
        rates = {"reserve_fw_per_s": big["n_fireworks"] / big["wall_s"]["reserve"],
                 "sync_records_per_s": big["n_ingested"] / big["wall_s"]["sync"],
                 # the hull of the largest measured size, scaled linearly to the campaign
                 "hull_s": big["wall_s"]["hull"] * args.candidates / big["n_unique"]}
    runs = [simulate(argparse.Namespace(**{**vars(args), "batch": b}), proto, rates)
            for b in args.batch]
    print(json.dumps({"rates": rates, "runs": runs}, indent=1))
    print("| batch | Fireworks | mode | EMT stage | EMT idle | DB commands/s (EMT) "
          "| QE stage | QE idle | login node | time to solution |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for b, r in zip(args.batch, runs, strict=True):
        on, off = r["online"], r["offline"]
        if on["emt"].get("saturated") or on["qe"].get("saturated"):
            print(f"| {b} | {r['fireworks']} | online | saturated | | | | | | |")
        else:
            print(f"| {b} | {r['fireworks']} | online | {on['emt']['makespan_s'] / 60:.1f} min "
                  f"| {on['emt']['idle']:.0%} | {on['emt']['db_ops_per_s']:,.0f} "
                  f"(server busy {on['emt']['db_busy']:.0%}) | {on['qe']['makespan_s'] / 60:.0f} "
                  f"min | {on['qe']['idle']:.0%} | — | {on['time_to_solution_h']:.2f} h |")
        print(f"| {b} | {r['fireworks']} | offline | {off['emt']['makespan_s'] / 60:.1f} min "
              f"| {off['emt']['idle']:.0%} | 0 | {off['qe']['makespan_s'] / 60:.0f} min "
              f"| {off['qe']['idle']:.0%} | reserve {off['reserve_s'] / 60:.1f} min, sync "
              f"{off['sync_s'] / 60:.1f} min | {off['time_to_solution_h']:.2f} h |")
    print("one server saturates at (nodes): " + ", ".join(
        f"batch {b}: EMT {r['saturation_nodes']['emt']:,.0f}" for b, r in
        zip(args.batch, runs, strict=True)) + f"; QE {runs[0]['saturation_nodes']['qe']:,.0f}")


if __name__ == "__main__":
    main()
