"""generation: matdx's candidate generation rate vs a raw ``replace_species`` loop.

matdx enumerates the EMT alloy space (prototype decorations and symmetry-distinct
orderings, with Vegard volumes and distance filtering). The baseline makes the same number
of structures the cheapest way pymatgen offers: copy a template whose sites carry one
placeholder element per species slot, then ``replace_species`` with the real elements —
no enumeration, no symmetry, no scaling, no filtering. Goal: matdx >= 0.5x the baseline.

    .venv/bin/python benchmarks/generation.py
"""

from __future__ import annotations

import time

from matdx.generation.candidates import generate_candidates
from matdx.generation.orderings import orderings
from matdx.generation.prototypes import PROTOTYPES
from matdx.schemas.campaign import ChemicalSpace

PLACEHOLDERS = ("H", "Li", "Be")


def templates(space: ChemicalSpace) -> list:
    """One placeholder-decorated template per prototype and ordering of the space."""
    out = []
    for name in space.prototypes:
        proto = PROTOTYPES[name]
        out.append(proto.build(list(PLACEHOLDERS[: proto.n_slots])))
    for parent in space.orderings.parents:
        for n in space.orderings.sizes:
            for k in (2, 3):
                for ordering, cell in orderings(PROTOTYPES[parent], n, k):
                    t = cell.copy()
                    for i, c in enumerate(ordering.colouring):
                        t.replace(i, PLACEHOLDERS[c])
                    out.append(t)
    return out


def main() -> None:
    space = ChemicalSpace(elements=["Al", "Cu", "Ag", "Au", "Ni", "Pd", "Pt"],
                          prototypes=["fcc", "bcc", "hcp", "L1_2", "L1_0", "B2", "D0_3",
                                      "rocksalt", "L2_1"])
    generate_candidates(space)  # warm the enumeration caches, as a long campaign would
    t0 = time.perf_counter()
    cands = generate_candidates(space)
    t_ours = time.perf_counter() - t0
    rate_ours = len(cands) / t_ours

    temps = templates(space)
    mapping = dict(zip(PLACEHOLDERS, ("Cu", "Au", "Pt"), strict=True))
    t0 = time.perf_counter()
    made = 0
    while made < len(cands):
        for t in temps:
            s = t.copy()
            s.replace_species({k: v for k, v in mapping.items() if k in s.symbol_set})
            made += 1
            if made == len(cands):
                break
    t_raw = time.perf_counter() - t0
    rate_raw = made / t_raw
    print(f"matdx generate_candidates: {len(cands)} candidates in {t_ours:.2f} s "
          f"= {rate_ours:,.0f} /s")
    print(f"raw replace_species loop:  {made} structures in {t_raw:.2f} s = {rate_raw:,.0f} /s")
    print(f"ratio = {rate_ours / rate_raw:.2f}x  (goal >= 0.5x)")


if __name__ == "__main__":
    main()
