"""Pseudopotentials: one file per element, chosen from a configured *family*.

A family is a rule that lists the pseudopotentials of a directory per element, best first
(:data:`FAMILIES`). The ``"debian"`` family is the set that Debian's ``quantum-espresso``
package installs in ``/usr/share/espresso/pseudo`` — a mixture of the Quantum ESPRESSO test
suite's files (LDA, PBE, PBEsol, BLYP, TPSS; norm-conserving, ultrasoft, PAW). It takes the
files named after Quantum ESPRESSO's convention ``<El>.<functional>-<...>.UPF`` whose UPF
header names that element and is not a bare Coulomb potential, and ranks them: functional
(:data:`FUNCTIONAL_PREFERENCE`, PBE first), scalar-relativistic before fully relativistic,
files with suggested cutoffs (pslibrary and other modern sets) before those without, then by
file name, so that the choice is deterministic. All elements of one calculation get the same
functional (pw.x refuses mixed ones): the first one in the preference order that every
element has.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from pymatgen.core.periodic_table import Element

from matdx.core.errors import EngineError

FUNCTIONAL_PREFERENCE = ("PBE", "PBESOL", "LDA", "BLYP", "TPSS")
"""Functionals in the order a family prefers them (others come last)."""

_FUNCTIONAL_NAMES = {
    ("PBE",): "PBE",
    ("SLA", "PW", "PBE", "PBE"): "PBE",
    ("SLA", "PW", "PBX", "PBC"): "PBE",
    ("PBESOL",): "PBESOL",
    ("SLA", "PW", "PSX", "PSC"): "PBESOL",
    ("PZ",): "LDA",
    ("LDA",): "LDA",
    ("SLA", "PZ", "NOGX", "NOGC"): "LDA",
    ("SLA", "LYP", "B88", "BLYP"): "BLYP",
    ("BLYP",): "BLYP",
    ("SLA", "PW", "TPSS", "TPSS"): "TPSS",
}
"""UPF functional strings (split in words) → functional name."""

_TYPES = {"US": "US", "USPP": "US", "PAW": "PAW"}
"""UPF ``pseudo_type`` → kind; anything else (NC, SL, 1/r) is norm-conserving."""

_HEADER_BYTES = 200_000


@dataclass(frozen=True)
class PseudoInfo:
    """What the UPF header of one pseudopotential file says.

    Attributes
    ----------
    element, path
        Element symbol and file.
    functional
        Normalised functional name (``"PBE"``, ``"PBESOL"``, ``"LDA"``, ...).
    pseudo_type
        ``"NC"``, ``"US"`` or ``"PAW"``.
    fully_relativistic
        Generated with spin-orbit (fully relativistic) wavefunctions.
    z_valence
        Valence charge.
    wfc_cutoff, rho_cutoff
        Suggested cutoffs (Ry), ``None`` when the file gives none.
    """

    element: str
    path: Path
    functional: str
    pseudo_type: str
    fully_relativistic: bool
    z_valence: float | None
    wfc_cutoff: float | None
    rho_cutoff: float | None

    @property
    def filename(self) -> str:
        """The file name (what pw.x's ATOMIC_SPECIES card names)."""
        return self.path.name

    def md5(self) -> str:
        """MD5 checksum of the file."""
        return hashlib.md5(self.path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class PseudoSelection:
    """The pseudopotentials of one calculation."""

    family: str
    directory: Path
    functional: str
    pseudos: dict[str, PseudoInfo]

    def filenames(self) -> dict[str, str]:
        """Element → file name."""
        return {el: p.filename for el, p in self.pseudos.items()}

    def provenance(self) -> dict[str, Any]:
        """Family, directory, functional and file names with MD5 sums."""
        return {
            "family": self.family,
            "directory": str(self.directory),
            "functional": self.functional,
            "files": {el: {"file": p.filename, "md5": p.md5()} for el, p in self.pseudos.items()},
        }

    def cutoffs(self, fallback_wfc: float = 40.0) -> tuple[float, float]:
        """Default ``(ecutwfc, ecutrho)`` in Ry.

        The largest suggested cutoffs of the files; ``fallback_wfc`` for files without
        suggestions (rounded up to whole Ry); ``ecutrho`` the largest suggested one, or
        4 × ``ecutwfc`` (norm-conserving) / 8 × ``ecutwfc`` (ultrasoft, PAW) for files without
        a suggestion, and at least 4 × ``ecutwfc``.
        """
        wfc = math.ceil(max((p.wfc_cutoff or fallback_wfc) for p in self.pseudos.values()))
        rho = max(
            [4.0 * wfc]
            + [
                p.rho_cutoff or (4.0 if p.pseudo_type == "NC" else 8.0) * wfc
                for p in self.pseudos.values()
            ]
        )
        return float(wfc), float(math.ceil(rho))

    def valence(self, element: str) -> float | None:
        """Valence charge of ``element``'s pseudopotential."""
        return self.pseudos[element].z_valence


def _functional(words: Iterable[str]) -> str:
    key = tuple(w.upper() for w in words)
    return _FUNCTIONAL_NAMES.get(key) or _FUNCTIONAL_NAMES.get(key[:4]) or "-".join(key)


def _float(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value else None


def read_header(path: Path) -> PseudoInfo | None:
    """Read the header of a UPF (v1 or v2) file; ``None`` if it is not one."""
    try:
        with open(path, errors="replace") as fh:
            text = fh.read(_HEADER_BYTES)
    except OSError:
        return None
    v2 = re.search(r"<PP_HEADER\s([^>]*)>", text)
    if v2:
        attrs = dict(re.findall(r"(\w+)\s*=\s*\"([^\"]*)\"", v2.group(1)))
        if attrs.get("is_coulomb", "").strip().lower() in ("true", "t", ".true."):
            return None
        kind = _TYPES.get(attrs.get("pseudo_type", "NC").strip().upper(), "NC")
        return PseudoInfo(
            element=attrs.get("element", "").strip(),
            path=path,
            functional=_functional(attrs.get("functional", "").split()),
            pseudo_type=kind,
            fully_relativistic=attrs.get("relativistic", "").strip() == "full"
            or attrs.get("has_so", "").strip().lower() in ("true", "t"),
            z_valence=_float(attrs.get("z_valence")),
            wfc_cutoff=_float(attrs.get("wfc_cutoff")),
            rho_cutoff=_float(attrs.get("rho_cutoff")),
        )
    v1 = re.search(r"<PP_HEADER>(.*?)</PP_HEADER>", text, re.S)
    if not v1:
        return None
    fields: dict[str, list[str]] = {}
    for line in v1.group(1).splitlines():
        for label in ("Element", "Exchange-Correlation", "Z valence", "Suggested cutoff"):
            if label in line:
                fields[label] = line.split(label)[0].split()
    words = fields.get("Exchange-Correlation", [])
    cut = fields.get("Suggested cutoff", [])
    kind = "US" if "Ultrasoft" in v1.group(1) else "PAW" if "PAW" in v1.group(1) else "NC"
    return PseudoInfo(
        element=(fields.get("Element") or [""])[0],
        path=path,
        functional=_functional(words[:4]),
        pseudo_type=kind,
        fully_relativistic="Fully-Relativistic" in text[: v1.start()],
        z_valence=_float((fields.get("Z valence") or [None])[0]),
        wfc_cutoff=_float(cut[0] if cut else None),
        rho_cutoff=_float(cut[1] if len(cut) > 1 else None),
    )


def _order(functional: str) -> tuple[int, str]:
    known = functional in FUNCTIONAL_PREFERENCE
    return (
        FUNCTIONAL_PREFERENCE.index(functional) if known else len(FUNCTIONAL_PREFERENCE),
        functional,
    )


def _rank(p: PseudoInfo) -> tuple[tuple[int, str], bool, bool, str]:
    return (_order(p.functional), p.fully_relativistic, p.wfc_cutoff is None, p.filename)


@cache
def _scan(directory: str, mtime_ns: int) -> dict[str, tuple[PseudoInfo, ...]]:
    found: dict[str, list[PseudoInfo]] = {}
    for path in sorted(Path(directory).iterdir()):
        if path.suffix.lower() != ".upf" or not path.is_file():
            continue
        symbol = path.name.split(".")[0]
        if not Element.is_valid_symbol(symbol):
            continue
        info = read_header(path)
        if info is not None and info.element == symbol:
            found.setdefault(symbol, []).append(info)
    return {el: tuple(sorted(ps, key=_rank)) for el, ps in sorted(found.items())}


def scan_directory(directory: Path) -> dict[str, tuple[PseudoInfo, ...]]:
    """Pseudopotentials of a directory by element, best first (cached until it changes).

    Raises
    ------
    EngineError
        If the directory does not exist.
    """
    directory = Path(directory)
    try:
        mtime = directory.stat().st_mtime_ns
    except OSError:
        raise EngineError(f"pseudopotential directory {directory} not found") from None
    return _scan(str(directory.resolve()), mtime)


FAMILIES: dict[str, Callable[[Path], dict[str, tuple[PseudoInfo, ...]]]] = {
    "debian": scan_directory,
}
"""Family name → function listing a directory's pseudopotentials per element, best first."""

DEFAULT_DIRECTORIES = {"debian": Path("/usr/share/espresso/pseudo")}
"""Where each family's files are when the profile does not say."""


def candidates(family: str, directory: Path | None = None) -> dict[str, tuple[PseudoInfo, ...]]:
    """Pseudopotentials of ``family`` in ``directory`` by element, best first.

    Raises
    ------
    EngineError
        Unknown family or missing directory.
    """
    try:
        lister = FAMILIES[family]
    except KeyError:
        known = ", ".join(sorted(FAMILIES))
        raise EngineError(f"unknown pseudopotential family {family!r} (known: {known})") from None
    return lister(Path(directory) if directory else DEFAULT_DIRECTORIES[family])


def available_elements(family: str, directory: Path | None = None) -> frozenset[str]:
    """Elements that ``family`` has a pseudopotential for."""
    return frozenset(candidates(family, directory))


def select(
    elements: Iterable[str],
    family: str = "debian",
    directory: Path | None = None,
    overrides: Mapping[str, str] | None = None,
) -> PseudoSelection:
    """Choose one pseudopotential per element, all with the same functional.

    Parameters
    ----------
    elements
        Element symbols.
    family
        Key of :data:`FAMILIES`.
    directory
        Where the files are (default: the family's usual directory).
    overrides
        Element → file name in ``directory``, taken as given (functional from its header).

    Raises
    ------
    EngineError
        An element without a pseudopotential, an override file that is missing or
        unreadable, or no functional common to all elements.
    """
    directory = Path(directory) if directory else DEFAULT_DIRECTORIES[family]
    table = candidates(family, directory)
    elements = sorted(set(elements))
    where = f"in family {family} ({directory})"
    chosen: dict[str, PseudoInfo] = {}
    for el, name in (overrides or {}).items():
        info = read_header(directory / name)
        if info is None:
            raise EngineError(f"pseudopotential {name!r} for {el} not found or not UPF {where}")
        chosen[el] = info
    missing = [el for el in elements if el not in chosen and el not in table]
    if missing:
        raise EngineError(f"no pseudopotential for {', '.join(missing)} {where}")
    fixed = {p.functional for p in chosen.values()}
    if len(fixed) > 1:
        raise EngineError(f"pseudopotential overrides mix functionals {sorted(fixed)} {where}")
    wanted = [el for el in elements if el not in chosen]
    options = sorted({p.functional for el in wanted for p in table[el]} | fixed, key=_order)
    for functional in options:
        if fixed and functional not in fixed:
            continue
        picks = {
            el: next((p for p in table[el] if p.functional == functional), None) for el in wanted
        }
        if all(picks.values()):
            chosen.update({el: p for el, p in picks.items() if p is not None})
            return PseudoSelection(family, directory, functional, dict(sorted(chosen.items())))
    names = ", ".join(elements)
    raise EngineError(f"no functional common to the pseudopotentials of {names} {where}")


__all__ = [
    "FAMILIES",
    "FUNCTIONAL_PREFERENCE",
    "PseudoInfo",
    "PseudoSelection",
    "available_elements",
    "candidates",
    "read_header",
    "scan_directory",
    "select",
]
