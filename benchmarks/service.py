"""service: reading every stored structure through the data service vs a direct ``find``.

N material records (4-atom Cu3Au structures, two thirds open, one third closed) are
inserted into a fresh database. Then, alternating, R times each:

* direct: one ``find`` of the owner's records on the database, sorted by ``_id``, every
  document decoded (what an administrator's script does);
* service: the same records read by ``matdx.client.Client.materials`` with the owner's API
  key, in pages of P, from ``matdx serve`` running as its own process (HTTP, token check,
  tier filter, JSON), each page continuing the previous page's cursor.

Goal: service <= 2x the direct time. Then C clients read pages of 100 at the same time,
each its own read: the requests per second of their first pages (each opens a read: a
pass over the collection on FerretDB) and of the 20 pages each that follow are reported.

    .venv/bin/python benchmarks/service.py --db mongodb://127.0.0.1:27027/bench_service
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time


def populate(uri: str, n: int) -> None:
    from pymatgen.core import Lattice, Structure

    from matdx.store.repository import Governance, NewMaterial
    from matdx.workflows.context import open_store

    store, _ = open_store(uri)
    coll = store.collection("materials")
    coll.drop()
    s = Structure(Lattice.cubic(3.75), ["Cu", "Cu", "Cu", "Au"],
                  [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    store.add_materials("bench", [NewMaterial("mdx-template", s, "fp", "bench")],
                        Governance(owner="bench"))
    template = coll.find_one({"_id": "mdx-template"})
    coll.delete_many({})
    chunk = []
    for i in range(n):
        doc = dict(template, _id=f"mdx-{i:016x}", material_id=f"mdx-{i:016x}")
        doc["tier"] = "closed" if i % 3 == 0 else "open"
        chunk.append(doc)
        if len(chunk) == 1000:
            coll.insert_many(chunk)
            chunk = []
    if chunk:
        coll.insert_many(chunk)


def direct(uri: str) -> int:
    from matdx.store.access import Caller
    from matdx.store.codec import unpack
    from matdx.workflows.context import open_store

    store, _ = open_store(uri)
    flt = Caller("bench", ("bench",)).tier_filter()
    cursor = store.collection("materials").find(flt).sort("_id", 1).batch_size(1000)
    return sum(1 for d in cursor if unpack(d)["structure"])


def through_service(url: str, key: str, page: int) -> int:
    from matdx.client import Client

    client = Client(url, key, timeout=600)
    n = sum(1 for r in client.materials(page=page) if r["structure"])
    client.close()
    return n


def concurrent(url: str, key: str, clients: int, requests: int) -> tuple[float, float]:
    """Requests per second of ``clients`` readers: opening their reads, then continuing."""
    import httpx

    opened = threading.Barrier(clients + 1)
    go = threading.Barrier(clients + 1)

    def worker() -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"},
                          timeout=600) as http:
            body = http.get("/v1/materials", params={"page_size": 100}).json()
            token = body["meta"]["next_page_token"]
            opened.wait()
            go.wait()
            for _ in range(requests):
                params = {"page_size": 100, "page_token": token}
                token = http.get("/v1/materials", params=params).json()["meta"]["next_page_token"]

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    opened.wait()
    first = clients / (time.perf_counter() - start)
    go.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    return first, clients * requests / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", required=True, help="MongoDB/FerretDB URI (a fresh database)")
    ap.add_argument("-n", type=int, default=100_000)
    ap.add_argument("--page", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--port", type=int, default=8799)
    args = ap.parse_args()

    from matdx.store import tokens
    from matdx.workflows.context import open_store

    t = time.perf_counter()
    populate(args.db, args.n)
    print(f"inserted {args.n} materials in {time.perf_counter() - t:.1f} s", flush=True)
    open_store(args.db)
    _, key = tokens.issue("bench", ["bench"], days=1)
    env = {**os.environ, "MATDX_DB_URI": args.db}
    server = subprocess.Popen([sys.executable, "-m", "matdx.cli.main", "serve", "--port",
                               str(args.port)], env=env)
    url = f"http://127.0.0.1:{args.port}"
    try:
        import httpx

        for _ in range(300):
            try:
                if httpx.get(url + "/v1/whoami").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        times: dict[str, list[float]] = {"direct": [], "service": []}
        for _ in range(args.repeats):
            for name, run in (("direct", lambda: direct(args.db)),
                              ("service", lambda: through_service(url, key, args.page))):
                t = time.perf_counter()
                n = run()
                times[name].append(time.perf_counter() - t)
                print(f"{name}: {n} records in {times[name][-1]:.1f} s", flush=True)
        d, s = (statistics.median(times[k]) for k in ("direct", "service"))
        ratios = [b / a for a, b in zip(times["direct"], times["service"], strict=True)]
        print(f"median direct {d:.1f} s, service {s:.1f} s: ratio {s / d:.2f} "
              f"(per repeat {', '.join(f'{r:.2f}' for r in ratios)}; goal <= 2)")
        runs = [concurrent(url, key, args.clients, 20) for _ in range(args.repeats)]
        for i, what in enumerate(("first pages (each opens a read)", "next pages")):
            rps = [r[i] for r in runs]
            print(f"{args.clients} concurrent clients, pages of 100, {what}: "
                  f"{statistics.median(rps):.1f} requests/s (runs: "
                  f"{', '.join(f'{r:.1f}' for r in rps)})")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
