"""Bad input: one line on stderr, a non-zero exit code, and nothing written."""

from __future__ import annotations

from pathlib import Path

import pymongo
import pytest

from matdx.cli.main import main

ROOT = Path(__file__).resolve().parents[1]

GOOD = """\
name: tiny
chemical_space:
  elements: [Cu, Au]
  max_components: 2
  orderings: null
batch_size: 10
"""


def run_cli(args, capsys):
    code = main(args)
    err = capsys.readouterr().err.strip()
    return code, err


def no_writes(uri: str) -> bool:
    base, name = uri.rsplit("/", 1)
    return name not in pymongo.MongoClient(base + "/").list_database_names()


@pytest.mark.ferretdb
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, "does not exist"),
        (GOOD.replace("[Cu, Au]", "[Cu, Au"), "malformed YAML"),
        (GOOD.replace("[Cu, Au]", "[Cu, Qq]"), "line 3, field chemical_space.elements: unknown element 'Qq'"),
        (GOOD.replace("max_components: 2", "max_components: 2\n  prototypes: [fcc, Z9]"), "unknown prototype 'Z9'"),
        (GOOD.replace("[Cu, Au]", "[Cu, Fe]"), "engine 'emt' does not support Fe"),
    ],
)
def test_bad_campaign_files(tmp_path, capsys, db_uri, text, expected):
    path = tmp_path / "c.yaml"
    if text is not None:
        path.write_text(text)
    code, err = run_cli(["run", str(path), "--db", db_uri], capsys)
    assert code == 2
    assert expected in err and err.startswith("error: ")
    assert len(err.splitlines()) == 1
    assert no_writes(db_uri)


def test_unreachable_database_hides_the_password(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MATDX_SERVER_TIMEOUT_MS", "300")
    path = tmp_path / "c.yaml"
    path.write_text(GOOD)
    uri = "mongodb://alice:s3cr3tpw@127.0.0.1:9/x"
    code, err = run_cli(["run", str(path), "--db", uri], capsys)
    assert code == 3
    assert "cannot reach the database at mongodb://alice:***@127.0.0.1:9/x" in err
    assert "s3cr3tpw" not in err
    assert len(err.splitlines()) == 1


@pytest.mark.ferretdb
def test_unknown_campaign(capsys, db_uri):
    for cmd in (["status", "nope"], ["results", "nope"], ["plot", "nope", "hull"],
                ["export", "nope", "-o", "x.parquet"]):
        code, err = run_cli([*cmd, "--db", db_uri], capsys)
        assert code == 2, cmd
        assert "unknown campaign 'nope'" in err


def test_embedded_store_is_not_created_by_a_bad_file(tmp_path, capsys, monkeypatch):
    data = tmp_path / "data"
    monkeypatch.setenv("MATDX_DATA_DIR", str(data))
    path = tmp_path / "c.yaml"
    path.write_text(GOOD + "bogus: 1\n")
    code, err = run_cli(["run", str(path)], capsys)
    assert code == 2 and "line 7, field bogus: unknown field" in err
    assert not data.exists()


@pytest.mark.ferretdb
def test_unknown_export_format_and_ranking_key(capsys, db_uri, tmp_path):
    code, err = run_cli(["export", "x", "--format", "xlsx", "-o", "a", "--db", db_uri], capsys)
    assert code == 2 and "unknown export format 'xlsx'" in err
    code, err = run_cli(["results", "x", "--sort", "colour", "--db", db_uri], capsys)
    assert code == 2 and "unknown campaign" in err
