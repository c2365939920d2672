"""The notebooks run top to bottom (nbclient), against FerretDB."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.ferretdb
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, db_uri, tmp_path, monkeypatch):
    monkeypatch.setenv("MATDX_DB_URI", db_uri)
    monkeypatch.setenv("MATDX_DATA_DIR", str(tmp_path / "data"))
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    assert len(NOTEBOOKS) >= 2
    assert os.environ["MATDX_DB_URI"] == db_uri
