"""Formation energies and hulls against pymatgen's PhaseDiagram of all materials at once."""

from __future__ import annotations

import numpy as np
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition

from matdx.analysis.thermo import EnergyPoint, thermodynamics


def test_hull_per_system_equals_one_phase_diagram_of_everything():
    rng = np.random.default_rng(5)
    formulas = ["Cu", "Au", "Pt", "CuAu", "Cu3Au", "CuAu3", "AuPt", "Au2Pt", "CuPt",
                "CuAuPt", "Cu2AuPt", "CuAu2Pt", "CuAuPt2", "Cu2Au2Pt"]
    points = [
        # several materials per composition (as the orderings of a campaign give), some tied
        EnergyPoint(f"m{i}-{k}", Composition(f), float(rng.normal(-0.3, 0.08)) if k < 2 else -0.2)
        for i, f in enumerate(formulas)
        for k in range(3)
    ]
    points += [EnergyPoint(f"ref-{el}", Composition(el), -0.2) for el in ("Cu", "Au", "Pt")]
    got = thermodynamics(points)
    entries = [PDEntry(p.composition, p.energy_per_atom * p.composition.num_atoms,
                       name=p.material_id) for p in points]
    pd = PhaseDiagram(entries)
    for e in entries:
        decomp, e_hull = pd.get_decomp_and_e_above_hull(e, allow_negative=True)
        t = got[e.name]
        assert abs(t.energy_above_hull - max(e_hull, 0.0)) < 1e-9, e.name
        assert t.is_stable == (e_hull < 1e-8)
        assert abs(t.formation_energy_per_atom - pd.get_form_energy_per_atom(e)) < 1e-9
        if e_hull > 1e-8:  # the phases of an unstable material's decomposition
            assert sorted(d["material_id"] for d in t.decomposes_to) == sorted(
                x.name for x in decomp)
    assert sum(t.is_stable for t in got.values()) >= 4
