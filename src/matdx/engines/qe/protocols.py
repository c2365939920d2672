"""Named accuracy protocols of pw.x calculations, and the default initial magnetic moments.

A protocol sets the k-point spacing, the smearing and the cutoffs of a calculation from the
pseudopotentials' metadata, as the protocols of aiida-common-workflows and the SSSP
verification work do (their ``fast``/``moderate``/``precise``): the cutoffs are the largest
the files suggest (a fallback for files that suggest none), scaled; the spacing and the
Marzari–Vanderbilt smearing width come from a convergence series of formation energies
(``matdx converge``). A setting given explicitly (``kspacing``, ``kpts``, ``degauss``,
``ecutwfc``, ...) overrides the protocol's.

The default, ``moderate``, converges the formation energies of the Al–Cu set (fcc, bcc
and hcp Al and Cu, L1₂ Al₃Cu and AlCu₃) to within 5 meV/atom of a 0.1 Å⁻¹ mesh, with
Debian's LDA pseudopotentials at 40/320 Ry (a change to 60/480 Ry moves them by less than
0.1 meV/atom).

Magnetism: elements in the Materials Project's table of initial moments (pymatgen's
``MPRelaxSet`` ``MAGMOM``: Fe, Co, Ni, Mn, Cr, V, ... ) start spin-polarised with its value
(5 μB for Ni; fcc Ni ends near 0.6 μB); a structure without such an element is computed
without spin unless moments are given.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from matdx.core.errors import InputError


@dataclass(frozen=True)
class Protocol:
    """Accuracy settings of one protocol.

    Attributes
    ----------
    kspacing
        Largest distance between k-points, Å⁻¹ (2π included).
    smearing, degauss
        Smearing kind (pw.x's name) and width in Ry.
    cutoff_scale
        Factor on the cutoffs the pseudopotentials suggest.
    fallback_wfc
        ``ecutwfc`` (Ry) for files that suggest none (before scaling).
    """

    kspacing: float
    smearing: str
    degauss: float
    cutoff_scale: float
    fallback_wfc: float


PROTOCOLS: dict[str, Protocol] = {
    "fast": Protocol(
        kspacing=0.3, smearing="mv", degauss=0.02, cutoff_scale=1.0, fallback_wfc=40.0
    ),
    "moderate": Protocol(
        kspacing=0.15, smearing="mv", degauss=0.02, cutoff_scale=1.0, fallback_wfc=40.0
    ),
    "precise": Protocol(
        kspacing=0.1, smearing="mv", degauss=0.01, cutoff_scale=1.25, fallback_wfc=40.0
    ),
}
"""Protocol name → settings."""

DEFAULT_PROTOCOL = "moderate"
"""The protocol of a calculation that names none."""


def protocol(name: str | None) -> Protocol:
    """The protocol called ``name`` (``None``: :data:`DEFAULT_PROTOCOL`).

    Raises
    ------
    InputError
        For an unknown name.
    """
    key = DEFAULT_PROTOCOL if name is None else str(name)
    try:
        return PROTOCOLS[key]
    except KeyError:
        known = ", ".join(PROTOCOLS)
        raise InputError(f"unknown pw.x protocol {key!r} (known: {known})") from None


@cache
def default_magmoms() -> dict[str, float]:
    """Initial moments (μB) of the Materials Project's input sets, by element (no ions)."""
    from pymatgen.io.vasp.sets import MPRelaxSet

    table: dict[str, Any] = MPRelaxSet.CONFIG["INCAR"]["MAGMOM"]
    return {el: float(m) for el, m in table.items() if el.isalpha()}


__all__ = ["DEFAULT_PROTOCOL", "PROTOCOLS", "Protocol", "default_magmoms", "protocol"]
