"""Plots of campaign results (matplotlib, written to files)."""

from __future__ import annotations

import math
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


OFF_SCALE = 0.3
"""Formation energies above this (eV/atom) are drawn at the top edge of a hull panel."""
HULL_CMAP = "viridis_r"
HULL_NORM = (0.0, OFF_SCALE)
"""Colour scale of the energy above the hull (eV/atom), shared by every panel."""


def _colour(fig: Any, axes: Sequence[Any], mappable: Any, shrink: float = 0.9) -> None:
    """One colour bar for all panels (ticks in the panels' format)."""
    from matplotlib.ticker import FormatStrFormatter

    bar = fig.colorbar(
        mappable,
        ax=list(axes),
        label="E$_{hull}$ (eV/atom)",
        extend="max",
        shrink=shrink,
        fraction=0.04 if len(axes) > 1 else 0.15,
        aspect=25,
    )
    bar.ax.yaxis.set_major_formatter(FormatStrFormatter("%.2f"))


def _mappable() -> Any:
    import matplotlib.cm as cm
    from matplotlib.colors import Normalize

    return cm.ScalarMappable(norm=Normalize(*HULL_NORM), cmap=HULL_CMAP)


def _binary_axes(ax: Any, system: str, rows: Sequence[Row]) -> int:
    """One binary hull panel; returns the number of off-scale points it shows at its edge."""
    from matplotlib.ticker import FormatStrFormatter

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
    ax.set_title(f"{a}–{b}", fontsize=10)
    ax.set_xlim(-0.03, 1.03)
    ax.xaxis.set_major_formatter(FormatStrFormatter("%.1f"))
    ax.yaxis.set_major_formatter(FormatStrFormatter("%.2f"))
    ax.set_xlabel(f"x in {a}$_{{1-x}}${b}$_x$")
    ax.set_ylabel("E$_{form}$ (eV/atom)")
    if not pts:
        return 0
    inside = [p for p in pts if p[1] <= OFF_SCALE]
    above = [p for p in pts if p[1] > OFF_SCALE]
    ax.scatter(
        [p[0] for p in inside],
        [p[1] for p in inside],
        c=[p[2] for p in inside],
        cmap=HULL_CMAP,
        vmin=HULL_NORM[0],
        vmax=HULL_NORM[1],
        s=14,
        zorder=2,
        label="computed (colour: E$_{hull}$)",
    )
    hull = sorted({(round(p[0], 6), p[1]) for p in pts if p[3]} | {(0.0, 0.0), (1.0, 0.0)})
    ax.plot([h[0] for h in hull], [h[1] for h in hull], "k-", lw=1, zorder=1, label="hull")
    ax.scatter(
        [h[0] for h in hull],
        [h[1] for h in hull],
        facecolors="none",
        edgecolors="crimson",
        s=44,
        lw=1.2,
        zorder=3,
        label="stable (on the hull)",
    )
    ax.axhline(0, color="grey", lw=0.5, zorder=0)
    low = min(0.0, *(p[1] for p in pts))
    ax.set_ylim(low - 0.05 * (OFF_SCALE - low), OFF_SCALE)
    if above:  # drawn on the top edge, pointing up: their energy is off the scale
        ax.scatter(
            [p[0] for p in above],
            [OFF_SCALE] * len(above),
            marker="^",
            s=30,
            color="tab:red",
            clip_on=False,
            zorder=4,
            label=f"E$_{{form}}$ > {OFF_SCALE} (at the edge)",
        )
        ax.annotate(
            f"{len(above)} off scale",
            (0.02, 0.93),
            xycoords="axes fraction",
            fontsize=7,
            color="tab:red",
        )
    return len(above)


def _legend(fig: Any, axes: Sequence[Any], spare: Sequence[Any] = ()) -> None:
    """One legend for all panels (every kind of mark that any panel shows).

    It goes into the empty panel places ``spare`` of the last row if there are any, else
    below the panels.
    """
    seen: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    where: dict[str, Any] = {"loc": "lower center", "ncol": min(len(seen), 2 * len(axes))}
    if spare:
        first, last = spare[0].get_position(), spare[-1].get_position()
        centre = ((first.x0 + last.x1) / 2, (first.y0 + first.y1) / 2)
        where = {"loc": "center", "bbox_to_anchor": centre, "ncol": 1 if len(spare) < 2 else 2}
    fig.legend(list(seen.values()), list(seen), frameon=False, fontsize=9, **where)


def plot_hull(rows: Sequence[Row], path: Path, chemsys: str | None = None, title: str = "") -> Path:
    """Write :func:`hull_figure` to ``path`` (PNG, PDF or SVG) and return ``path``."""
    fig = hull_figure(rows, chemsys, title)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def hull_figure(rows: Sequence[Row], chemsys: str | None = None, title: str = "") -> Any:
    """Convex hulls: one panel per binary system, or one binary or ternary ``chemsys``.

    Binary panels share one colour scale of the energy above the hull and one legend;
    formation energies above :data:`OFF_SCALE` are drawn as triangles on the top edge. A
    ternary system is drawn as a composition triangle (see :func:`ternary_figure`).

    Parameters
    ----------
    rows
        Summary documents (formula, formation energy, energy above hull, stability).
    chemsys
        ``"Cu-Au"`` or ``"Au-Cu-Pt"`` for a single system; all binaries if omitted.
    title
        What the results are (campaign, engine, step), shown in the figure's title.

    Returns
    -------
    matplotlib.figure.Figure
        The figure.
    """
    if chemsys:
        system = "-".join(sorted(chemsys.split("-")))
        els = set(system.split("-"))
        sub = [r for r in rows if set(r["chemsys"].split("-")) <= els]
        if len(els) not in (2, 3):
            raise InputError(f"--chemsys {chemsys!r}: give a binary or ternary system")
        if not sub:
            raise InputError(f"no results in chemical system {chemsys!r}")
        if len(els) == 3:
            return ternary_figure(sub, system, title)
        systems = {system: sub}
    else:
        systems = {}
        for r in rows:
            if r.get("nelements") == 2:
                systems.setdefault(r["chemsys"], [])
        if not systems:
            raise InputError("no binary results to plot; give --chemsys")
        for system in systems:
            a, b = system.split("-")
            systems[system] = [r for r in rows if r["chemsys"] in (system, a, b)]
    names = sorted(systems)
    ncols = min(4, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig, grid = _figure(nrows, ncols, size=(3.6, 3.0) if len(names) > 1 else (5.6, 4.2))
    axes = [a for row in grid for a in row]
    for ax, system in zip(axes, names, strict=False):
        _binary_axes(ax, system, systems[system])
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    shown = axes[: len(names)]
    fig.suptitle(f"Convex hulls{': ' + title if title else ''}", fontsize=12)
    spare = len(axes) > len(names)
    fig.tight_layout(rect=(0, 0.0 if spare else 0.06 if nrows > 1 else 0.1, 0.88, 0.97))
    _colour(fig, shown, _mappable(), shrink=0.9 if nrows == 1 else 0.5)
    _legend(fig, shown, axes[len(names) :])
    return fig


def _triangle(comp: Composition, els: Sequence[str]) -> tuple[float, float]:
    """Cartesian point of a composition in the triangle with corners ``els`` (b right, c top)."""
    fb = comp.get_atomic_fraction(els[1])
    fc = comp.get_atomic_fraction(els[2])
    return fb + fc / 2, fc * math.sqrt(3) / 2


def ternary_figure(rows: Sequence[Row], system: str, title: str = "") -> Any:
    """A ternary hull diagram: stable phases joined by the hull's tie lines.

    Every computed composition is a point coloured by its energy above the hull (the scale
    of the binary panels); the stable phases are labelled. The tie lines are the edges of
    the lower convex hull's facets (pymatgen's ``PhaseDiagram``).
    """
    from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram

    els = system.split("-")
    usable = [r for r in rows if r.get("energy_per_atom") is not None]
    entries = [
        PDEntry(
            Composition(r["formula_pretty"]),
            r["energy_per_atom"] * Composition(r["formula_pretty"]).num_atoms,
            name=r["material_id"],
        )
        for r in usable
    ]
    have = {r["chemsys"] for r in usable if "-" not in r["chemsys"]}
    if not set(els) <= have:
        missing = ", ".join(sorted(set(els) - have))
        raise InputError(f"{system}: no computed elemental phase of {missing}")
    pd = PhaseDiagram(entries)
    fig, grid = _figure(1, 1, size=(6.4, 5.8))
    ax = grid[0][0]
    corners = [(0.0, 0.0), (1.0, 0.0), (0.5, math.sqrt(3) / 2), (0.0, 0.0)]
    ax.plot(*zip(*corners, strict=True), color="black", lw=1.2, zorder=1)
    for facet in pd.facets:
        pts = [_triangle(pd.qhull_entries[i].composition, els) for i in facet]
        loop = [*pts, pts[0]]
        ax.plot(*zip(*loop, strict=True), color="0.35", lw=0.8, zorder=1)
    ax.plot([], [], color="0.35", lw=0.8, label="tie lines of the hull")
    xy = [_triangle(Composition(r["formula_pretty"]), els) for r in usable]
    e_hull = [min(r.get("energy_above_hull") or 0.0, OFF_SCALE) for r in usable]
    order = sorted(range(len(usable)), key=lambda i: -e_hull[i])  # stable ones on top
    sc = ax.scatter(
        [xy[i][0] for i in order],
        [xy[i][1] for i in order],
        c=[e_hull[i] for i in order],
        cmap=HULL_CMAP,
        vmin=HULL_NORM[0],
        vmax=HULL_NORM[1],
        s=12,
        zorder=2,
        label="computed (colour: E$_{hull}$)",
    )
    stable = {e.composition.reduced_formula: e for e in pd.stable_entries}
    for formula, entry in sorted(stable.items()):
        x, y = _triangle(entry.composition, els)
        ax.scatter([x], [y], facecolors="none", edgecolors="crimson", s=60, lw=1.4, zorder=3)
        if len(entry.composition.elements) > 1:  # the corners are labelled already
            ax.annotate(formula, (x, y), xytext=(4, 4), textcoords="offset points", fontsize=8)
    ax.scatter([], [], facecolors="none", edgecolors="crimson", s=60, label="stable")
    for (x, y), el, (dx, dy) in zip(
        corners[:3], els, ((-0.05, -0.05), (0.02, -0.05), (-0.02, 0.03)), strict=True
    ):
        ax.text(x + dx, y + dy, el, fontsize=13, weight="bold")
    n_ternary = sum(len(Composition(r["formula_pretty"]).elements) == 3 for r in usable)
    n_stable3 = sum(len(e.composition.elements) == 3 for e in stable.values())
    ax.set_title(
        f"{'–'.join(els)} hull{': ' + title if title else ''}\n"
        f"{n_ternary} ternary materials computed, {n_stable3} of them stable",
        fontsize=11,
    )
    ax.set_aspect("equal")
    ax.set_xlim(-0.08, 1.08)
    ax.set_ylim(-0.1, math.sqrt(3) / 2 + 0.08)
    ax.axis("off")
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    _colour(fig, [ax], sc, shrink=0.7)
    return fig


def plot_distribution(
    rows: Sequence[Row], path: Path, chemsys: str | None = None, title: str = ""
) -> Path:
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
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


PLOTS: dict[str, Callable[[Sequence[Row], Path, str | None, str], Path]] = {
    "hull": plot_hull,
    "distribution": plot_distribution,
}
