"""Plots of campaign results (matplotlib, written to files)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pymatgen.core import Composition

from matdx.core.errors import InputError

Row = dict[str, Any]


def _figure(nrows: int = 1, ncols: int = 1, size: tuple[float, float] = (6, 4)) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)


def _binary_axes(ax: Any, system: str, rows: Sequence[Row]) -> None:
    a, b = system.split("-")
    pts = []
    for r in rows:
        if r.get("formation_energy_per_atom") is None:
            continue
        x = Composition(r["formula_pretty"]).get_atomic_fraction(b)
        pts.append(
            (
                x,
                r["formation_energy_per_atom"],
                r.get("energy_above_hull") or 0.0,
                bool(r.get("is_stable")),
            )
        )
    if not pts:
        return
    sc = ax.scatter(
        [p[0] for p in pts],
        [p[1] for p in pts],
        c=[p[2] for p in pts],
        cmap="viridis_r",
        vmin=0,
        vmax=0.3,
        s=14,
        zorder=2,
    )
    hull = sorted({(round(p[0], 6), p[1]) for p in pts if p[3]} | {(0.0, 0.0), (1.0, 0.0)})
    ax.plot([h[0] for h in hull], [h[1] for h in hull], "k-", lw=1, zorder=1)
    ax.scatter(
        [h[0] for h in hull],
        [h[1] for h in hull],
        facecolors="none",
        edgecolors="crimson",
        s=40,
        zorder=3,
    )
    ax.axhline(0, color="grey", lw=0.5)
    top = max(p[1] for p in pts)
    if top > 0.3:  # keep the hull region readable; say how many points are off the scale
        ax.set_ylim(top=0.3)
        off = sum(p[1] > 0.3 for p in pts)
        ax.text(
            0.98,
            0.97,
            f"{off} above 0.3",
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=7,
            color="grey",
        )
    ax.set_title(f"{a}–{b}")
    ax.set_xlabel(f"x in {a}$_{{1-x}}${b}$_x$")
    ax.set_ylabel("E$_{form}$ (eV/atom)")
    ax.figure.colorbar(sc, ax=ax, label="E$_{hull}$ (eV/atom)")


def plot_hull(rows: Sequence[Row], path: Path, chemsys: str | None = None) -> Path:
    """Convex hulls: one panel per binary system, or pymatgen's diagram for ``chemsys``.

    Parameters
    ----------
    rows
        Summary documents (formula, formation energy, energy above hull, stability).
    path
        PNG/PDF/SVG file to write.
    chemsys
        ``"Cu-Au"`` or ``"Au-Cu-Pt"`` for a single system; all binaries if omitted.

    Returns
    -------
    Path
        The written file.
    """
    if chemsys:
        system = "-".join(sorted(chemsys.split("-")))
        els = set(system.split("-"))
        sub = [r for r in rows if set(r["chemsys"].split("-")) <= els]
        if not sub:
            raise InputError(f"no results in chemical system {chemsys!r}")
        if len(els) == 2:
            fig, axes = _figure()
            _binary_axes(axes[0][0], system, sub)
        else:
            fig = _pd_figure(sub)
    else:
        by_sys: dict[str, list[Row]] = defaultdict(list)
        for r in rows:
            if r.get("nelements") == 2:
                by_sys[r["chemsys"]].append(r)
        if not by_sys:
            raise InputError("no binary results to plot; give --chemsys")
        systems = sorted(by_sys)
        ncols = min(4, len(systems))
        nrows = math.ceil(len(systems) / ncols)
        fig, axes = _figure(nrows, ncols, size=(4.2, 3.2))
        for ax, system in zip((a for row in axes for a in row), systems, strict=False):
            a, b = system.split("-")
            elementals = [r for r in rows if r["chemsys"] in (a, b)]
            _binary_axes(ax, system, by_sys[system] + elementals)
        for ax in list(a for row in axes for a in row)[len(systems) :]:
            ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def _pd_figure(rows: Sequence[Row]) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from pymatgen.analysis.phase_diagram import PDEntry, PDPlotter, PhaseDiagram

    entries = [
        PDEntry(
            Composition(r["formula_pretty"]),
            r["energy_per_atom"] * Composition(r["formula_pretty"]).num_atoms,
        )
        for r in rows
        if r.get("energy_per_atom") is not None
    ]
    ax = PDPlotter(PhaseDiagram(entries), backend="matplotlib").get_plot()
    return ax.figure


def plot_distribution(rows: Sequence[Row], path: Path, chemsys: str | None = None) -> Path:
    """Histograms of formation energy and energy above hull."""
    fig, axes = _figure(1, 2, size=(5, 3.6))
    for ax, key, label in (
        (axes[0][0], "formation_energy_per_atom", "E$_{form}$ (eV/atom)"),
        (axes[0][1], "energy_above_hull", "E$_{hull}$ (eV/atom)"),
    ):
        vals = [r[key] for r in rows if r.get(key) is not None]
        ax.hist(vals, bins=40, color="steelblue")
        ax.set_xlabel(label)
        ax.set_ylabel("materials")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


PLOTS: dict[str, Callable[[Sequence[Row], Path, str | None], Path]] = {
    "hull": plot_hull,
    "distribution": plot_distribution,
}
