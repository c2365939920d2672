"""The README's demo command, run as written, on the embedded store."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from ase.io import read

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_readme_demo_command_runs_the_demo_campaign(tmp_path):
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/demo.sh" in readme
    env = {**os.environ, "MATDX_DATA_DIR": str(tmp_path / "data"),
           "MATDX_DEMO_OUT": str(tmp_path / "out")}
    env.pop("MATDX_DB_URI", None)
    proc = subprocess.run(["bash", "scripts/demo.sh"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "emt-alloys: 4872 raw candidates → 4116 unique" in proc.stdout
    assert "candidates by state: COMPLETED 4116" in proc.stdout
    assert (tmp_path / "data" / "embedded_store.json").stat().st_size > 1_000_000
    df = pd.read_parquet(tmp_path / "out" / "emt-alloys.parquet")
    assert len(df) == 4116
    assert df["energy_above_hull"].min() == 0.0
    assert (df["energy_above_hull"] >= 0).all()
    frames = read(tmp_path / "out" / "emt-alloys.extxyz", index=":")
    assert len(frames) == 4116
    png = tmp_path / "out" / "emt-alloys-hull.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
