"""Shared fixtures.

Tests marked ``ferretdb`` need the FerretDB server that ``scripts/services.sh`` starts
(``MATDX_TEST_DB_URI``); without it they fail with a message, they do not skip.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own data directory and no inherited database URI."""
    monkeypatch.setenv("MATDX_DATA_DIR", str(tmp_path_factory.mktemp("matdx-data")))
    monkeypatch.delenv("MATDX_DB_URI", raising=False)


@pytest.fixture(scope="session")
def ferret_base() -> str:
    uri = os.environ.get("MATDX_TEST_DB_URI")
    if not uri:
        pytest.fail("MATDX_TEST_DB_URI is not set: start FerretDB with scripts/services.sh "
                    "and source .ci/services.env (or deselect with -m 'not ferretdb')")
    return uri.rstrip("/") + "/"


@pytest.fixture
def db_uri(ferret_base: str) -> Iterator[str]:
    """A fresh database on the FerretDB server, dropped afterwards."""
    import pymongo

    name = f"t_{uuid.uuid4().hex[:12]}"
    yield ferret_base + name
    client = pymongo.MongoClient(ferret_base, serverSelectionTimeoutMS=3000)
    client.drop_database(name)
    client.close()


def campaign_file(tmp_path: Path, text: str, name: str = "campaign.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p
