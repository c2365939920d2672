"""store_ingest: matdx's bulk write path vs raw pymongo ``insert_many`` on the same server.

5,000 calculation records shaped like real EMT results (16-atom structures with forces and
stress) are written

* by ``Store.write_calculations`` (schema validation with mongoengine, nested-array
  packing, the idempotency check of existing ids, insert of the new ones), and
* by ``insert_many`` of the same already-packed documents into another collection with
  the same indexes,

alternating chunk by chunk.

Goal: matdx >= 0.8x the raw rate.

    .venv/bin/python benchmarks/store_ingest.py --db mongodb://127.0.0.1:27027/bench_ingest
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def records(n: int, campaign: str) -> list[dict]:
    from matdx.engines.emt.core import to_structure
    from matdx.generation.prototypes import PROTOTYPES

    rng = np.random.default_rng(0)
    base = PROTOTYPES["L1_2"].build(["Cu", "Au"]) * (2, 2, 1)
    from matdx.engines.emt.core import to_atoms

    atoms = to_atoms(base)
    out = []
    for i in range(n):
        a = atoms.copy()
        a.rattle(0.01, seed=i)
        out.append({
            "material_id": f"mdx-bench{i:08d}", "campaign": campaign, "engine": "emt",
            "task": "relax", "settings": {"engine": "emt", "fmax": 0.05},
            "settings_hash": "benchhash", "status": "completed", "tier": "open",
            "owner": "bench", "groups": [], "rights": "CC-BY-4.0", "export_control": False,
            "output": {
                "engine": "emt", "code_version": "3.29", "task": "relax",
                "energy": float(rng.normal()), "energy_per_atom": float(rng.normal()),
                "volume_per_atom": 12.7, "forces": rng.normal(size=(16, 3)).tolist(),
                "stress": rng.normal(size=6).tolist(),
                "structure": to_structure(a).as_dict(), "converged": True, "n_steps": 7,
            },
            "provenance": {"host": "bench", "wall_time_s": 0.05},
        })
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", required=True, help="MongoDB/FerretDB URI (a fresh database)")
    ap.add_argument("-n", type=int, default=5000)
    ap.add_argument("--chunk", type=int, default=500, help="records per write call")
    args = ap.parse_args()

    from matdx.store.codec import pack
    from matdx.store.repository import calc_id
    from matdx.workflows.context import open_store

    store, _ = open_store(args.db)
    recs = records(args.n, "bench-ingest")
    raw = [pack({**r, "_id": calc_id(r["material_id"], r["settings_hash"]) + "-raw",
                 "calc_id": calc_id(r["material_id"], r["settings_hash"])}) for r in recs]
    coll = store.collection("calculations")
    raw_coll = coll.database["bench_raw_calculations"]
    raw_coll.drop()
    # the same secondary indexes as the store's collection: both writers pay the server's
    # index upkeep, and the ratio measures the write path
    for name, info in coll.index_information().items():
        if name != "_id_":
            raw_coll.create_index(info["key"], name=name)
    # the two writers alternate chunk by chunk, so that both see the same server state
    # (database file size, other load on the machine)
    t_raw = t_ours = 0.0
    for i in range(0, len(recs), args.chunk):
        t0 = time.perf_counter()
        raw_coll.insert_many(raw[i : i + args.chunk], ordered=False)
        t1 = time.perf_counter()
        store.write_calculations(recs[i : i + args.chunk])
        t_raw, t_ours = t_raw + t1 - t0, t_ours + time.perf_counter() - t1
    assert coll.count_documents({"campaign": "bench-ingest"}) == args.n
    print(f"raw insert_many:          {args.n / t_raw:8.0f} records/s ({t_raw:.1f} s)")
    print(f"Store.write_calculations: {args.n / t_ours:8.0f} records/s ({t_ours:.1f} s)")
    print(f"ratio = {t_raw / t_ours:.2f}x of raw  (goal >= 0.8x)")


if __name__ == "__main__":
    main()
