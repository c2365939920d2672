"""export: 100,000 results to a DataFrame through the query layer vs a raw ``find``.

Summaries of 100,000 materials are inserted, then read

* by ``matdx.store.query.frame`` (validated query, database-side tier filter, unpacking,
  hiding of derived values the caller may not see, flattening, DataFrame), and
* by raw pymongo ``list(collection.find({"campaign": ...}))``.

Goal: matdx <= 1.5x the raw time.

    .venv/bin/python benchmarks/export.py --db mongodb://127.0.0.1:27027/bench_export
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", required=True, help="MongoDB/FerretDB URI (a fresh database)")
    ap.add_argument("-n", type=int, default=100_000)
    args = ap.parse_args()

    from matdx.store import query as q
    from matdx.store.access import Caller
    from matdx.workflows.context import open_store

    store, _ = open_store(args.db)
    coll = store.collection("summaries")
    campaign = "bench-export"
    if coll.count_documents({"campaign": campaign}) != args.n:
        coll.delete_many({"campaign": campaign})
        rng = np.random.default_rng(0)
        docs = []
        for i in range(args.n):
            e = float(rng.normal(-0.05, 0.05))
            docs.append({
                "_id": f"{campaign}:mdx-{i:010d}", "campaign": campaign,
                "material_id": f"mdx-{i:010d}", "formula_pretty": "Cu3Au", "chemsys": "Au-Cu",
                "elements": ["Au", "Cu"], "nelements": 2, "nsites": 4,
                "symmetry": {"number": 221, "symbol": "Pm-3m", "symprec": 0.01},
                "energy_per_atom": e, "formation_energy_per_atom": e + 0.01,
                "energy_above_hull": abs(e), "is_stable": False,
                "decomposes_to": [
                    {"material_id": "mdx-cu", "formula": "Cu", "amount": 0.75},
                    {"material_id": "mdx-au", "formula": "Au", "amount": 0.25},
                ],
                "volume_per_atom": 12.7, "method": {"engine": "emt", "settings_hash": "x"},
                "derived_access": [{"tier": "open", "owner": "bench", "groups": []}],
                "tier": "open", "owner": "bench", "groups": [], "rights": "CC-BY-4.0",
                "export_control": False, "schema_version": 4,
            })
        for i in range(0, len(docs), 5000):
            coll.insert_many(docs[i : i + 5000], ordered=False)
        print(f"inserted {args.n} summaries")

    t0 = time.perf_counter()
    raw = list(coll.find({"campaign": campaign}))
    t_raw = time.perf_counter() - t0
    t0 = time.perf_counter()
    df = q.frame(q.MaterialQuery(campaign=campaign), Caller("reader"))
    t_ours = time.perf_counter() - t0
    assert len(df) == len(raw) == args.n
    print(f"raw find into a list:  {t_raw:6.1f} s")
    print(f"query layer DataFrame: {t_ours:6.1f} s")
    print(f"ratio = {t_ours / t_raw:.2f}x  (goal <= 1.5x)")


if __name__ == "__main__":
    main()
