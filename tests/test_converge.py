"""``matdx converge``: a setting varied over a campaign's representative materials."""

from __future__ import annotations

from pathlib import Path

import pytest

from matdx.cli.main import main
from matdx.workflows.campaign import load_campaign
from matdx.workflows.converge import convergence_series, representative_materials

ROOT = Path(__file__).resolve().parents[1]
LAMMPS_CAMPAIGN = ROOT / "workflows" / "lammps_md.yaml"


def test_representative_materials_are_every_reference_phase_and_the_small_compounds():
    labels = set(representative_materials(load_campaign(ROOT / "workflows" / "qe_binaries.yaml")))
    assert labels == {
        "Al-fcc", "Al-bcc", "Al-hcp", "Cu-fcc", "Cu-bcc", "Cu-hcp",
        "Al3Cu-L1_2", "AlCu3-L1_2", "AlCu-L1_0", "AlCu-B2",
    }


def test_series_of_a_setting_that_changes_nothing_converges_at_once(tmp_path, capsys):
    """EAM energies per atom do not depend on the supercell: every value agrees exactly."""
    loaded = load_campaign(LAMMPS_CAMPAIGN)
    only = ["Cu-fcc", "Cu-hcp", "Ni-fcc", "CuNi3-L1_2"]
    series = convergence_series(loaded, "eam_relax", "supercell", [1, 2], only=only)
    first, last = series.points
    assert first.max_energy_change == pytest.approx(0.0, abs=1e-8)
    assert first.formation["CuNi3-L1_2"] == pytest.approx(last.formation["CuNi3-L1_2"], abs=1e-8)
    assert first.phase_order_ok and series.converged_value == 1
    out = tmp_path / "series.json"
    argv = ["converge", str(LAMMPS_CAMPAIGN), "--step", "eam_relax", "--setting", "supercell",
            "--values", "1,2", "--materials", ",".join(only), "-o", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "converged within 5 meV/atom from supercell=1" in text and out.is_file()


def test_bad_series_are_one_line_errors(capsys):
    base = ["converge", str(LAMMPS_CAMPAIGN), "--step"]
    for argv, message in (
        ([*base, "nope"], "campaign has no step 'nope'"),
        ([*base, "eam_relax", "--values", "1"], "at least two values"),
        ([*base, "eam_relax", "--materials", "Xx-fcc"], "unknown material(s) Xx-fcc"),
    ):
        assert main(argv) != 0
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
