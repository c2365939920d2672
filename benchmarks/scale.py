"""scale: the cost of each stage of an offline campaign against its size, to ~10^6 candidates.

Each size runs in a fresh process on a fresh database of the server given with ``--db``:

* ``generate``: the raw candidates (orderings on fcc and bcc supercells of up to
  ``--sizes`` atoms of the 7 EMT metals, binary to quaternary, plus the prototypes and
  the elemental references), ``candidates_with_references``;
* ``deduplicate``: ``deduplicate`` of all of them (with the store's known structures);
* ``store``: ``Store.add_materials`` of the unique materials;
* ``queue``: the workflow of batch Fireworks (``--batch`` materials each), as
  ``matdx run`` builds it (``queue_materials``);
* ``reserve``: every batch Firework reserved into a job directory (``reserve_job``, what
  ``matdx submit --offline`` does on the login node);
* (not measured) the compute step: one reserved Firework is run for real on this node
  (EMT relaxations, ``run_offline_dir``), and its records file and ``FW_offline.json``
  are replicated into every other launch directory with that directory's material ids,
  input structures and launch id; the energies are replaced by random numbers
  (0.1 eV/atom spread) so that the hull has the shape of a real one;
* ``sync``: ``matdx sync`` (records ingested, offline launches recovered), less the
  analysis it starts;
* ``hull``: that analysis (formation energies, convex hulls, summaries written);
* ``export``: ``matdx export --format parquet`` of the campaign's results.

Per stage: wall time and peak resident memory (sampled every 20 ms). The parent fits
time = a N^b over the sizes for each stage. Goals: b <= 1.15 for every stage; peak
memory <= 8 GB at 10^6; sync >= 2,000 records/s; reservation >= 500 Fireworks/s;
Parquet export of 10^6 results <= 2 minutes.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scale.py \
        --db mongodb://127.0.0.1:27027/ --sizes 4 5 6 --out scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ELEMENTS = ["Al", "Cu", "Ag", "Au", "Ni", "Pd", "Pt"]
# a size ladder: (elements, largest ordering) -> raw candidates
LADDER = {k: (ELEMENTS, k) for k in range(3, 8)}
"""Size k: orderings of up to k atoms; raw candidates 798, 5,992, ~20,000, ~160,000, ~500,000."""
CAMPAIGN = """\
name: {name}
seed: 1
chemical_space:
  elements: {elements}
  max_components: 4
  max_atoms: 16
  orderings: {{parents: [fcc, bcc], sizes: {sizes}}}
prescreen: {{engine: emt, relax_cell: true, optimizer: BFGS, fmax: 0.05, steps: 300}}
batch_size: {batch}
"""
STAGES = ("generate", "deduplicate", "store", "queue", "reserve", "sync", "hull", "export")


class Meter:
    """Wall time and peak RSS of named stages (RSS sampled from a thread every 20 ms)."""

    def __init__(self) -> None:
        self.label: str | None = None
        self.peak: dict[str, int] = {}
        self.wall: dict[str, float] = {}
        self._page = os.sysconf("SC_PAGE_SIZE")
        threading.Thread(target=self._sample, daemon=True).start()

    def _rss(self) -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * self._page

    def _sample(self) -> None:
        while True:
            if self.label is not None:
                self.peak[self.label] = max(self.peak.get(self.label, 0), self._rss())
            time.sleep(0.02)

    @contextmanager
    def stage(self, label: str, total: int | None = None):
        outer, self.label = self.label, label
        self.peak[label] = max(self.peak.get(label, 0), self._rss())
        t0 = time.perf_counter()
        try:
            yield lambda n: None
        finally:
            self.wall[label] = self.wall.get(label, 0.0) + time.perf_counter() - t0
            self.peak[label] = max(self.peak[label], self._rss())
            self.label = outer
            if outer is not None:  # a nested stage's time is not its parent's
                self.wall[outer] = self.wall.get(outer, 0.0) - (time.perf_counter() - t0)

    def message(self, text: str) -> None:
        print(text, flush=True)


def replicate(template_dir: Path, dirs: list[Path], seed: int) -> int:
    """Copy the template launch's results into ``dirs`` (see the module docstring)."""
    from matdx.workflows.sinks import INPUTS_FILE, RECORDS_FILE, read_records

    records = read_records(template_dir / RECORDS_FILE)
    done = json.loads((template_dir / "FW_offline.json").read_text())
    rec0 = records[0]
    rng = np.random.default_rng(seed)
    n = 0
    for d in dirs:
        inputs = json.loads((d / INPUTS_FILE).read_text())
        with (d / RECORDS_FILE).open("w") as fh:
            for mid, structure in inputs.items():
                out = {**rec0["output"], "structure": structure,
                       "energy_per_atom": float(rng.normal(-4.0, 0.1))}
                out["energy"] = out["energy_per_atom"] * len(structure["sites"])
                fh.write(json.dumps({**rec0, "material_id": mid, "output": out}) + "\n")
                n += 1
        for extra in ("FW_ping.json",):
            if (template_dir / extra).exists():
                (d / extra).write_bytes((template_dir / extra).read_bytes())
        launch_id = json.loads((d / "FW_offline.json").read_text())["launch_id"]
        (d / "FW_offline.json").write_text(json.dumps({**done, "launch_id": launch_id}))
    return n


def one_size(k: int, db: str, batch: int, work: Path) -> dict:
    """Run every stage for size ``k`` of :data:`LADDER`; return the measurements."""
    meter = Meter()
    elements, largest = LADDER[k]
    name = f"scale{k}"
    path = work / f"{name}.yaml"
    path.write_text(CAMPAIGN.format(name=name, elements=json.dumps(elements), batch=batch,
                                    sizes=json.dumps(list(range(2, largest + 1)))))
    from matdx.execution.offline import reserve_job, run_offline_dir, sync
    from matdx.store.access import Caller
    from matdx.store.export import export
    from matdx.workflows import fireworks_adapter as fwa
    from matdx.workflows.campaign import load_campaign
    from matdx.workflows.context import default_db, open_store
    from matdx.workflows.runner import governance, plan_materials, queue_materials

    loaded = load_campaign(path)
    store, backend = open_store(db)
    lp = fwa.get_launchpad(backend)
    gov = store.claim_campaign(name, governance(loaded.spec, "bench"))
    plan = plan_materials(loaded, store, meter)  # stages "generate" and "dedup"
    mats, n_raw = plan.materials, plan.n_raw
    print(f"{plan.n_raw} raw, {len(mats)} unique", flush=True)
    with meter.stage("store"):
        store.add_materials(name, mats, gov)
        store.upsert_campaign(name, loaded.raw, gov, n_raw=plan.n_raw, n_unique=len(mats),
                              n_reused=0)
    with meter.stage("queue"):
        ids = [m.material_id for m in mats]
        done = store.completed(ids, loaded.settings_hash)
        queued = fwa.queued_material_ids(lp, name)
        todo = [m for m in mats if m.material_id not in done | queued]
        queue_materials(store, lp, loaded, todo, gov)
    del plan, mats, todo
    job = work / f"job{k}"
    with meter.stage("reserve"):
        dirs = reserve_job(lp, store, name, job, 10**9)
    t0 = time.perf_counter()
    with default_db(db):
        run_offline_dir(str(dirs[0]))
    t_task = time.perf_counter() - t0
    replicate(dirs[0], dirs[1:], seed=k)
    original = fwa.run_fireworks

    def timed_analysis(*args, **kwargs):
        with meter.stage("hull"):
            return original(*args, **kwargs)

    fwa.run_fireworks = timed_analysis
    with meter.stage("sync"):
        report = sync(lp, store, name, run_dir=work / "runs", db_uri=db)
    fwa.run_fireworks = original
    assert report.analysed and not report.lost, report
    with meter.stage("export"):
        n_out = export(store, name, Caller("bench", ("bench",)), "parquet",
                       work / f"{name}.parquet", loaded.settings_hash)
    return {
        "k": k, "n_raw": n_raw, "n_unique": n_out,
        "n_fireworks": len(dirs), "n_ingested": report.ingested,
        "task_s": round(t_task, 2),
        "wall_s": {s: round(meter.wall.get(s, 0.0), 3) for s in STAGES},
        "peak_rss_mb": {s: round(meter.peak.get(s, 0) / 2**20, 1) for s in STAGES},
    }


def fit(ns: list[float], ts: list[float]) -> tuple[float, float]:
    """Exponent b and prefactor a of t = a n^b (least squares in log-log)."""
    b, loga = np.polyfit(np.log(ns), np.log(ts), 1)
    return float(b), float(np.exp(loga))


def plot(path: Path, before: Path | None, out: Path) -> None:
    """Wall time and peak memory of each stage against the number of unique candidates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def rows(p: Path) -> list[dict]:
        return sorted(json.loads(p.read_text()).values(), key=lambda r: r["n_unique"])

    now = rows(path)
    fig, (ax, am) = plt.subplots(1, 2, figsize=(14, 4.8), gridspec_kw={"wspace": 0.75})
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ns = np.array([r["n_unique"] for r in now], dtype=float)
    for i, s in enumerate(STAGES):
        ts = np.array([max(r["wall_s"][s], 1e-3) for r in now])
        b, _ = fit(list(ns), list(ts))
        ax.loglog(ns, ts, "o-", color=colours[i % len(colours)], label=f"{s} (b = {b:.2f})")
        am.semilogx(ns, [r["peak_rss_mb"][s] / 1024 for r in now], "o-",
                    color=colours[i % len(colours)], label=s)
    if before is not None:
        old = rows(before)
        nb = [r["n_unique"] for r in old]
        for s in ("reserve", "sync"):
            i = STAGES.index(s)
            ax.loglog(nb, [r["wall_s"][s] for r in old], "x--", color=colours[i],
                      label=f"{s}, one Firework at a time")
    guide = np.array([ns[0], ns[-1]])
    ax.loglog(guide, 1.0 * guide / guide[0], ":", color="grey", label="slope 1")
    ax.set_xlabel("unique candidates")
    ax.set_ylabel("wall time (s)")
    ax.set_title("time per stage (FerretDB on PostgreSQL, 2 shared cores)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    am.set_xlabel("unique candidates")
    am.set_ylabel("peak resident memory (GiB)")
    am.set_title("peak memory of the process in each stage")
    am.legend(fontsize=7)
    fig.savefig(out, dpi=110, bbox_inches="tight")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", required=True, help="server URI; a database per size is created")
    ap.add_argument("--sizes", type=int, nargs="+", default=[3, 4, 5],
                    help=f"keys of the size ladder {sorted(LADDER)}")
    ap.add_argument("--batch", type=int, default=50, help="materials per Firework")
    ap.add_argument("--out", type=Path, default=Path("scale.json"))
    ap.add_argument("--plot", type=Path, help="draw the curve of --out (no runs)")
    ap.add_argument("--before", type=Path, help="with --plot: earlier results, drawn dashed")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one is not None:
        work = Path(tempfile.mkdtemp(prefix=f"matdx-scale{args.one}-"))
        os.environ["MATDX_DATA_DIR"] = str(work)
        print(json.dumps(one_size(args.one, args.db, args.batch, work)), flush=True)
        return
    if args.plot:
        plot(args.out, args.before, args.plot)
        return
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    for k in args.sizes:
        stamp = time.strftime("%H%M%S")
        db = args.db.rstrip("/") + f"/bench_scale{k}_{stamp}"
        out = subprocess.run([sys.executable, __file__, "--db", db, "--one", str(k),
                              "--batch", str(args.batch)], capture_output=True, text=True)
        sys.stderr.write(out.stderr[-3000:])
        print(out.stdout, flush=True)
        if out.returncode:
            sys.exit(out.returncode)
        results[str(k)] = json.loads(out.stdout.strip().splitlines()[-1])
        args.out.write_text(json.dumps(results, indent=1))
    rows = sorted(results.values(), key=lambda r: r["n_unique"])
    if len(rows) >= 2:
        ns = [r["n_unique"] for r in rows]
        for s in STAGES:
            ts = [max(r["wall_s"][s], 1e-3) for r in rows]
            b, _ = fit(ns, ts)
            print(f"{s:9s} exponent {b:5.2f}  " + "  ".join(
                f"{r['n_unique']}: {r['wall_s'][s]:.1f} s {r['peak_rss_mb'][s]:.0f} MB"
                for r in rows))


if __name__ == "__main__":
    main()
