"""dedup: matdx's bucketed deduplication vs pymatgen's ``StructureMatcher.group_structures``.

The set: 20,000 candidates, 5,000 of them of one composition (CuAu orderings of fcc and
bcc supercells up to 8 atoms and copies of them), the rest from the EMT alloy campaign,
with rotated, translated, site-permuted, supercell and 0.5 %-strained copies as duplicates.
Both methods must return the same groups. Goal: >= 10x faster.

    .venv/bin/python benchmarks/dedup.py [--total 20000 --one 5000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from pymatgen.core import Structure
from pymatgen.core.operations import SymmOp

from matdx.generation.candidates import generate_candidates
from matdx.generation.dedup import deduplicate, default_matcher
from matdx.schemas.campaign import ChemicalSpace


def copy_of(s: Structure, kind: int, rng: np.random.Generator) -> Structure:
    c = s.copy()
    if kind == 0:
        c.apply_operation(SymmOp.from_axis_angle_and_translation(rng.normal(size=3), 29.0))
    elif kind == 1:
        c.translate_sites(list(range(len(c))), rng.random(3))
    elif kind == 2:
        c = Structure.from_sites([s[i] for i in rng.permutation(len(s))])
    elif kind == 3:
        c = s * (2, 1, 1) if len(s) <= 8 else s.copy()
    else:
        c.apply_strain(0.005)
    return c


def fill(base: list[Structure], n: int, rng: np.random.Generator) -> list[Structure]:
    out = list(base[:n])
    i = 0
    while len(out) < n:
        out.append(copy_of(base[i % len(base)], i % 5, rng))
        i += 1
    return out


def build(total: int, one: int, seed: int = 0) -> list[Structure]:
    rng = np.random.default_rng(seed)
    cuau = ChemicalSpace(elements=["Cu", "Au"], min_components=2, max_components=2,
                         prototypes=["L1_0", "B2"],
                         orderings={"parents": ["fcc", "bcc"], "sizes": [2, 4, 6, 8]})
    same = [c.structure for c in generate_candidates(cuau)
            if c.structure.composition.reduced_formula == "CuAu"]
    alloys = ChemicalSpace(elements=["Al", "Cu", "Ag", "Au", "Ni", "Pd", "Pt"],
                           prototypes=["fcc", "bcc", "hcp", "L1_2", "L1_0", "B2", "D0_3",
                                       "rocksalt", "L2_1"])
    other = [c.structure for c in generate_candidates(alloys)
             if c.structure.composition.reduced_formula != "CuAu"]
    mixed = fill(same, one, rng) + fill(other, total - one, rng)
    order = rng.permutation(len(mixed))
    return [mixed[i] for i in order]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--total", type=int, default=20_000)
    ap.add_argument("--one", type=int, default=5_000, help="candidates of one composition")
    args = ap.parse_args()
    structures = build(args.total, args.one)
    print(f"{len(structures)} candidates, {args.one} of composition CuAu")

    t0 = time.perf_counter()
    ours = deduplicate(structures)
    t_ours = time.perf_counter() - t0
    print(f"matdx deduplicate:        {t_ours:8.1f} s  "
          f"({t_ours / len(structures) * 1000:.2f} s per 1,000), {len(ours.groups)} groups")

    t0 = time.perf_counter()
    theirs = default_matcher().group_structures(structures)
    t_theirs = time.perf_counter() - t0
    print(f"group_structures (same matcher):{t_theirs:8.1f} s  "
          f"({t_theirs / len(structures) * 1000:.2f} s per 1,000), {len(theirs)} groups")

    index = {id(s): i for i, s in enumerate(structures)}
    same = sorted(sorted(index[id(s)] for s in g) for g in theirs) == sorted(ours.groups)
    print(f"same groups: {same}")
    print(f"speed-up = {t_theirs / t_ours:.1f}x  (goal >= 10x)")
    if not same:
        raise SystemExit("groups differ")


if __name__ == "__main__":
    main()
