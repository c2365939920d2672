"""``matdx converge``: a convergence series of one step setting, and its verdict."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from matdx.cli.ui import console, err_console
from matdx.core.errors import InputError


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def converge(
    campaign_file: Annotated[Path, typer.Argument(help="Campaign YAML file.")],
    step: Annotated[str, typer.Option("--step", help="Step whose engine and settings to use.")],
    setting: Annotated[
        str, typer.Option("--setting", help="Setting to vary, e.g. kspacing, ecutwfc, degauss.")
    ] = "kspacing",
    values: Annotated[
        str,
        typer.Option("--values", help="Comma-separated values, the most accurate last."),
    ] = "0.4,0.3,0.2,0.15,0.1",
    materials: Annotated[
        str | None,
        typer.Option("--materials", help="Comma-separated labels, e.g. Al-fcc,Al3Cu-L1_2."),
    ] = None,
    max_sites: Annotated[
        int, typer.Option("--max-sites", min=1, help="Largest compound cell.")
    ] = 4,
    tolerance: Annotated[
        float, typer.Option("--tolerance", min=0.0, help="Formation-energy tolerance (eV/atom).")
    ] = 0.005,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Also write the series as JSON.")
    ] = None,
) -> None:
    """Vary one setting of a step over representative materials and report the spread.

    Static calculations of each element's fcc, bcc and hcp phases and the campaign's small
    compounds (at Vegard volumes), once per value; for each value the largest change of an
    energy and of a formation energy against the last value, and whether the lowest
    elemental phases agree. Nothing is stored.
    """
    from matdx.workflows.campaign import load_campaign
    from matdx.workflows.converge import convergence_series

    loaded = load_campaign(campaign_file)
    parsed = [_value(v.strip()) for v in values.split(",") if v.strip()]
    only = [m.strip() for m in materials.split(",")] if materials else None
    if len(parsed) < 2:
        raise InputError("--values needs at least two values")

    def progress(label: str, value: Any, energy: float) -> None:
        err_console.print(f"{setting}={value} {label}: {energy:.6f} eV/atom")

    series = convergence_series(
        loaded, step, setting, parsed, max_sites, only, tolerance, progress=progress
    )
    labels = list(series.materials)
    compounds = list(series.points[-1].formation)
    table = Table(title=f"{loaded.spec.name} step {step}: {setting} series (meV/atom)")
    table.add_column(setting, justify="right")
    for c in compounds:
        table.add_column(f"E_form {c}", justify="right")
    table.add_column("max |ΔE_form|", justify="right")
    table.add_column("max |ΔE|", justify="right")
    table.add_column("lowest phases", justify="left")

    def mev(x: float | None) -> str:
        return "–" if x is None else f"{1000 * x:.1f}"

    for p in series.points:
        table.add_row(
            str(p.value),
            *(mev(p.formation.get(c)) for c in compounds),
            mev(p.max_formation_change),
            mev(p.max_energy_change),
            "same" if p.phase_order_ok else "differ",
        )
    console.print(table)
    verdict = series.converged_value
    console.print(
        f"converged within {1000 * tolerance:g} meV/atom from {setting}={verdict}"
        if verdict is not None and verdict != series.points[-1].value
        else f"only the last value is within {1000 * tolerance:g} meV/atom of itself: "
        "extend the series"
    )
    if output is not None:
        doc = {
            "campaign": loaded.spec.name,
            "step": step,
            "setting": setting,
            "tolerance_eV_per_atom": tolerance,
            "materials": {k: series.materials[k] for k in labels},
            "converged_value": verdict,
            "points": [p.__dict__ for p in series.points],
        }
        output.write_text(json.dumps(doc, indent=1))
        console.print(f"wrote {output}")
