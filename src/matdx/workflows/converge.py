"""Convergence series: one setting of a step varied over representative materials.

:func:`convergence_series` computes the static energy of a campaign's representative
materials (every elemental phase matdx computes as a reference — fcc, bcc, hcp — and the
compounds of the campaign's prototypes, at their Vegard volumes) with a step's engine and
settings, once per value of one setting (``kspacing``, ``ecutwfc``, ``degauss``, ...), and
reports how far the energies, formation energies and phase orderings of each value are
from those of the most accurate value (the last one given). Nothing goes to the store.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pymatgen.core import Composition, Structure

from matdx.core.errors import InputError
from matdx.engines.registry import get_engine
from matdx.generation.candidates import decorate
from matdx.generation.prototypes import PROTOTYPES
from matdx.workflows.campaign import LoadedCampaign
from matdx.workflows.runner import REFERENCE_PROTOTYPES

TOLERANCE = 0.005
"""Default tolerance on formation energies (eV/atom) for a value to count as converged."""


@dataclass
class SeriesPoint:
    """The results of one value of the varied setting (energies in eV/atom)."""

    value: Any
    energies: dict[str, float]
    formation: dict[str, float]
    max_energy_change: float | None = None
    max_formation_change: float | None = None
    phase_order_ok: bool | None = None


@dataclass
class Series:
    """A convergence series and its verdict."""

    step: str
    setting: str
    materials: dict[str, str]
    points: list[SeriesPoint] = field(default_factory=list)
    tolerance: float = TOLERANCE

    @property
    def converged_value(self) -> Any:
        """The least accurate value that agrees with the most accurate one.

        Its formation energies, and those of every more accurate value, are within
        :attr:`tolerance` of the most accurate value's, with the same lowest elemental
        phases (``None`` if no value is).
        """
        best = None
        for p in reversed(self.points):
            if p.max_formation_change is None or p.max_formation_change > self.tolerance:
                break
            if p.phase_order_ok is False:
                break
            best = p.value
        return best


def representative_materials(loaded: LoadedCampaign, max_sites: int = 4) -> dict[str, Structure]:
    """Elemental reference phases and small compounds of a campaign, by label.

    Labels are ``<formula>-<prototype>`` (``Al-fcc``, ``Al3Cu-L1_2``); each element's fcc,
    bcc and hcp phases, and every decoration of the campaign's prototypes with at most
    ``max_sites`` sites and at least two elements.
    """
    space = loaded.spec.chemical_space
    out: dict[str, Structure] = {}
    for el in space.elements:
        for name in REFERENCE_PROTOTYPES:
            for c in decorate(PROTOTYPES[name], [el]):
                out[f"{c.formula}-{name}"] = c.structure
    for proto in dict.fromkeys(PROTOTYPES[p] for p in space.prototypes):
        k = proto.n_slots
        if k < 2 or proto.nsites > max_sites or k > space.max_components:
            continue
        for combo in itertools.combinations(space.elements, k):
            for c in decorate(proto, combo):
                out.setdefault(f"{c.formula}-{proto.name}", c.structure)
    return out


def _formation(energies: dict[str, float], structures: dict[str, Structure]) -> dict[str, float]:
    comps = {k: Composition(structures[k].composition.reduced_formula) for k in energies}
    refs: dict[str, float] = {}
    for k, e in energies.items():
        if len(comps[k].elements) == 1:
            el = comps[k].elements[0].symbol
            refs[el] = min(refs.get(el, e), e)
    return {
        k: e - sum(comps[k].get_atomic_fraction(el) * refs[el.symbol] for el in comps[k].elements)
        for k, e in energies.items()
        if len(comps[k].elements) > 1 and all(el.symbol in refs for el in comps[k].elements)
    }


def _lowest_phases(energies: dict[str, float], structures: dict[str, Structure]) -> dict[str, str]:
    lowest: dict[str, tuple[float, str]] = {}
    for k, e in energies.items():
        comp = structures[k].composition
        if len(comp.elements) == 1:
            el = comp.elements[0].symbol
            if el not in lowest or e < lowest[el][0]:
                lowest[el] = (e, k)
    return {el: k for el, (_, k) in lowest.items()}


def convergence_series(
    loaded: LoadedCampaign,
    step: str,
    setting: str,
    values: Sequence[Any],
    max_sites: int = 4,
    only: Sequence[str] | None = None,
    tolerance: float = TOLERANCE,
    progress: Callable[[str, Any, float], None] | None = None,
) -> Series:
    """Static energies of representative materials for each value of one setting.

    Parameters
    ----------
    loaded
        The campaign.
    step
        Name of the step whose engine and settings are used (its task does not matter:
        every point is a static calculation).
    setting
        The setting varied (an engine setting, e.g. ``kspacing`` or ``ecutwfc``).
    values
        Its values, the most accurate last (the reference of the others).
    max_sites
        Largest compound cell of :func:`representative_materials`.
    only
        Labels of the materials to compute (default: all of them).
    tolerance
        Largest change of a formation energy (eV/atom) a converged value may show.
    progress
        Called with ``(label, value, energy_per_atom)`` after each calculation.

    Returns
    -------
    Series
        Energies and formation energies per value, their largest changes against the
        last value, whether the lowest elemental phases are the same, and the verdict.

    Raises
    ------
    InputError
        Unknown step, fewer than two values, or an unknown material label.
    """
    plan = {s["name"]: s for s in loaded.step_plan()[1:]}
    if step not in plan:
        raise InputError(f"campaign has no step {step!r} (steps: {', '.join(plan) or 'none'})")
    if len(values) < 2:
        raise InputError("a convergence series needs at least two values")
    entry = plan[step]
    structures = representative_materials(loaded, max_sites)
    if only:
        unknown = [k for k in only if k not in structures]
        if unknown:
            raise InputError(
                f"unknown material(s) {', '.join(unknown)} (known: {', '.join(structures)})"
            )
        structures = {k: structures[k] for k in only}
    engine = get_engine(entry["engine"])
    formulas = {k: s.composition.reduced_formula for k, s in structures.items()}
    series = Series(step, setting, formulas)
    series.tolerance = tolerance
    for value in values:
        options = {**entry["options"], setting: value}
        energies = {}
        for label, structure in structures.items():
            result = engine.calculate(structure, "static", options, None, None)
            energies[label] = result.energy_per_atom
            if progress is not None:
                progress(label, value, result.energy_per_atom)
        series.points.append(SeriesPoint(value, energies, _formation(energies, structures)))
    last = series.points[-1]
    lowest = _lowest_phases(last.energies, structures)
    for p in series.points:
        p.max_energy_change = max(abs(p.energies[k] - last.energies[k]) for k in p.energies)
        changes = [abs(p.formation[k] - last.formation[k]) for k in p.formation]
        p.max_formation_change = max(changes) if changes else None
        p.phase_order_ok = _lowest_phases(p.energies, structures) == lowest
    return series


__all__ = ["TOLERANCE", "Series", "SeriesPoint", "convergence_series", "representative_materials"]
