"""The command line as a new user meets it: usage errors, help, machine-readable output,
read-only commands that write nothing, dry runs that change nothing, bounded YAML input."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pymongo
import pytest

from matdx.cli.main import command, main
from matdx.core.errors import InputError
from matdx.core.yamlio import MAX_ALIAS_NODES, MAX_YAML_BYTES, parse_yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = """\
name: {name}
chemical_space:
  elements: [Cu, Au, Pt]
  max_components: 3
  prototypes: [fcc, bcc, L1_2, L1_0, B2, L2_1]
  orderings: null
batch_size: 50
"""


def run_cli(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err.strip()


def one_line_error(code, err):
    assert code == 2, err
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err


def db_exists(uri: str) -> bool:
    base, name = uri.rsplit("/", 1)
    return name in pymongo.MongoClient(base + "/").list_database_names()


# -- usage errors and --version: one line, exit 2, whatever the version of typer ----------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["results", "--bogus"], "No such option: --bogus"),
        (["frobnicate"], "No such command 'frobnicate'"),
        (["results"], "Missing argument"),
        (["results", "x", "--top", "many"], "--top"),
        (["plot", "x", "hull", "-o", "/missing/dir/x.png"], "directory '/missing/dir' does not exist"),
        (["export", "x", "-o", "/missing/dir/x.csv", "--format", "csv"], "does not exist"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("MATDX_DATA_DIR", str(tmp_path / "data"))
    code, _out, err = run_cli(args, capsys)
    one_line_error(code, err)
    assert expected in err
    assert not (tmp_path / "data").exists()  # nothing written, not even the store
    assert not Path("/missing").exists()


def test_version(capsys):
    from matdx import __version__

    code, out, err = run_cli(["--version"], capsys)
    assert code == 0 and out.strip() == f"matdx {__version__}" and not err


@pytest.mark.parametrize("args", [[], ["data"], ["campaign"], ["profile"]])
def test_a_group_without_command_shows_its_help(args, capsys):
    code, out, err = run_cli(args, capsys)
    assert code == 0 and out.startswith("Usage: matdx") and not err


def test_usage_error_in_a_fresh_process():
    """The installed entry point, not only main(): no traceback on stderr."""
    proc = subprocess.run([sys.executable, "-m", "matdx.cli.main", "results", "--bogus"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and len(proc.stderr.splitlines()) == 1
    assert "Traceback" not in proc.stderr


# -- help: flags as flags, help on every option, one meaning per option name -------------


def _commands(cmd, path=()):
    subs = getattr(cmd, "commands", None)
    if subs:
        for name, sub in subs.items():
            yield from _commands(sub, (*path, name))
    else:
        yield path, cmd


ALL = list(_commands(command()))


@pytest.mark.parametrize("path", [p for p, _ in ALL], ids=" ".join)
def test_help_reads_right(path, capsys):
    code, out, err = run_cli([*path, "--help"], capsys)
    assert code == 0, err
    for typed in ("<bool>", "<list[str]>", "<str>", "<int>", "<float>", "{campaign}"):
        assert typed not in out.split("Options:")[1], (path, typed)
    cmd = dict(ALL)[path]
    for p in cmd.params:
        if p.param_type_name == "option":
            assert p.help and p.help.strip(), (path, p.opts)
        if "--group" in p.opts:  # a group of a user identity, never an account
            assert "account" not in p.help.lower(), (path, p.help)
            if path != ("token", "issue"):
                assert "Act as a member" in p.help, (path, p.help)


def test_set_tier_groups_are_not_the_act_as_group():
    set_tier = command().commands["data"].commands["set-tier"]
    ctx = set_tier.make_context(
        "set-tier", ["shared-closed", "--campaign", "c", "--groups", "g1,g2", "--group", "me"]
    )
    assert ctx.params["groups"] == "g1,g2"
    assert ctx.params["group"] == ("me",) or ctx.params["group"] == ["me"]


def test_submit_account_is_account_with_pjm_short_flag():
    submit = command().commands["submit"]
    opts = {o for p in submit.params for o in p.opts}
    assert {"--account", "-g"} <= opts and "--group" not in opts
    ctx = submit.make_context("submit", ["c.yaml", "--profile", "p.yaml", "-g", "hp1"])
    assert ctx.params["account"] == "hp1"


# -- YAML bounds ----------------------------------------------------------------------------


LAUGHS = "\n".join(
    ["a: &a [x, x, x, x, x, x, x, x, x]"]
    + [f"{n}: &{n} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]"
       for p, n in zip("abcdefgh", "bcdefghi", strict=True)]
)


def test_nested_aliases_are_refused_quickly(tmp_path, capsys):
    path = tmp_path / "laughs.yaml"
    path.write_text(LAUGHS + "\n")
    assert path.stat().st_size < 400  # a few hundred bytes that would expand to 9**9 nodes
    start = time.monotonic()
    code, _out, err = run_cli(["run", str(path)], capsys)
    assert time.monotonic() - start < 10
    one_line_error(code, err)
    assert f"aliases expand to more than {MAX_ALIAS_NODES} nodes" in err
    assert not (tmp_path / "data").exists()


def test_a_few_aliases_still_work():
    data, _ = parse_yaml("base: &b {x: 1}\none: *b\ntwo: *b\n")
    assert data == {"base": {"x": 1}, "one": {"x": 1}, "two": {"x": 1}}


def test_large_yaml_is_refused_unread(tmp_path, capsys):
    path = tmp_path / "big.yaml"
    path.write_text("name: x\n" + "#" * MAX_YAML_BYTES + "\n")
    code, _out, err = run_cli(["run", str(path)], capsys)
    one_line_error(code, err)
    assert "too large" in err
    with pytest.raises(InputError, match="too large"):
        parse_yaml("a: 1\n" * (MAX_YAML_BYTES // 4))


# -- a campaign on the embedded store: read-only commands write nothing ----------------------


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """A small ternary campaign run on the embedded store, in its own process."""
    root = tmp_path_factory.mktemp("embedded")
    (root / "c.yaml").write_text(TINY.format(name="tiny"))
    env = {**os.environ, "MATDX_DATA_DIR": str(root / "data")}
    env.pop("MATDX_DB_URI", None)
    proc = subprocess.run([sys.executable, "-m", "matdx.cli.main", "run", str(root / "c.yaml")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return root, env


READ_ONLY = [
    ["results", "tiny", "--format", "json"],
    ["status", "tiny", "--format", "json"],
    ["query", "--campaign", "tiny", "--format", "csv"],
    ["campaign", "picks", "tiny", "--format", "json"],
    ["export", "tiny", "--format", "csv", "-o", "{out}/x.csv"],
    ["plot", "tiny", "hull", "-o", "{out}/x.png"],
    ["data", "migrate", "--dry-run"],
]


def test_read_only_commands_never_write_the_store(embedded, tmp_path):
    root, env = embedded
    store = next((root / "data").rglob("*.json"))
    before = (store.stat().st_mtime_ns, store.read_bytes())
    script = (
        "import sys, json\nfrom matdx.cli.main import main\n"
        "codes = [main(a) for a in json.loads(sys.argv[1])]\nprint(codes)\n"
    )
    cmds = [[a.format(out=tmp_path) for a in c] for c in READ_ONLY]
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(cmds)], capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == str([0] * len(cmds)), proc.stderr
    assert (store.stat().st_mtime_ns, store.read_bytes()) == before
    assert (tmp_path / "x.csv").exists() and (tmp_path / "x.png").exists()


def test_reading_a_store_that_does_not_exist_creates_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MATDX_DATA_DIR", str(tmp_path / "data"))
    proc = subprocess.run([sys.executable, "-m", "matdx.cli.main", "results", "nope"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MATDX_DATA_DIR": str(tmp_path / "data")})
    assert proc.returncode == 2 and "unknown campaign 'nope'" in proc.stderr
    assert not (tmp_path / "data").exists()


# -- machine-readable output -----------------------------------------------------------------


@pytest.fixture(scope="module")
def ferret_campaign(ferret_base, tmp_path_factory):
    import uuid

    name = f"t_cli_{uuid.uuid4().hex[:8]}"
    uri = ferret_base + name
    path = tmp_path_factory.mktemp("c") / "c.yaml"
    path.write_text(TINY.format(name="tiny"))
    assert main(["run", str(path), "--db", uri]) == 0
    yield uri, path
    pymongo.MongoClient(ferret_base).drop_database(name)


@pytest.mark.ferretdb
def test_results_as_json_and_csv(ferret_campaign, capsys):
    uri, _ = ferret_campaign
    capsys.readouterr()
    code, out, err = run_cli(["results", "tiny", "--top", "5", "--format", "json", "--db", uri],
                             capsys)
    assert code == 0, err
    rows = json.loads(out)
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    hulls = [r["energy_above_hull"] for r in rows]
    assert hulls == sorted(hulls) and all(isinstance(h, float) for h in hulls)
    assert {"material_id", "formula_pretty", "spacegroup_number", "volume_per_atom"} <= set(rows[0])
    code, out, err = run_cli(["results", "tiny", "--top", "5", "--format", "csv", "--db", uri],
                             capsys)
    table = list(csv.DictReader(io.StringIO(out)))
    assert [r["material_id"] for r in table] == [r["material_id"] for r in rows]
    # not a terminal: no box table by default, CSV
    code, out, err = run_cli(["results", "tiny", "--top", "3", "--db", uri], capsys)
    assert code == 0 and "┃" not in out and "│" not in out
    assert out.splitlines()[0].startswith("rank,campaign,material_id,")
    code, out, err = run_cli(["results", "tiny", "--format", "yaml", "--db", uri], capsys)
    one_line_error(code, err)


@pytest.mark.ferretdb
def test_status_picks_and_query_as_json(ferret_campaign, capsys):
    uri, _ = ferret_campaign
    capsys.readouterr()
    code, out, err = run_cli(["status", "tiny", "--format", "json", "--db", uri], capsys)
    assert code == 0, err
    st = json.loads(out)
    assert st["campaign"] == "tiny" and st["n_unique"] > 0
    assert st["calculations"]["completed"] == st["n_unique"]
    assert st["states"]["fireworks"]["COMPLETED"] > 0
    code, out, err = run_cli(["campaign", "picks", "tiny", "--format", "json", "--db", uri],
                             capsys)
    assert code == 0 and json.loads(out) == []
    code, out, err = run_cli(["query", "--campaign", "tiny", "--chemsys", "Au-Cu", "--limit", "0",
                              "--format", "json", "--db", uri], capsys)
    assert code == 0, err
    rows = json.loads(out)
    assert rows and all(r["campaign"] == "tiny" for r in rows)


@pytest.mark.ferretdb
def test_submit_dry_run_changes_nothing(tmp_path, capsys, db_uri, monkeypatch):
    monkeypatch.setenv("MATDX_DATA_DIR", str(tmp_path / "data"))
    path = tmp_path / "c.yaml"
    path.write_text(TINY.format(name="dry"))
    profile = str(ROOT / "hpc_profiles" / "local.yaml")
    for extra in ([], ["--offline"]):
        code, out, err = run_cli(["submit", str(path), "--profile", profile, "--dry-run",
                                  "--db", db_uri, *extra], capsys)
        assert code == 0, err
        assert "dry run, nothing changed" in out and "would be newly queued" in out
        assert "#!/" in out  # the job script is shown
        assert not db_exists(db_uri), extra
        assert not (tmp_path / "data" / "runs").exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--elapse", "xyz"], "job options, field elapse: expected HH:MM:SS"),
        (["--account", ";rm"], "job options, field group: String should match pattern"),
        (["--rscgrp", "huge"], "field rscgrp: unknown resource group 'huge'"),
    ],
)
def test_bad_job_options_are_one_line(args, expected, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MATDX_DATA_DIR", str(tmp_path / "data"))
    path = tmp_path / "c.yaml"
    path.write_text(TINY.format(name="bad"))
    code, _out, err = run_cli(["submit", str(path), "--profile",
                              str(ROOT / "hpc_profiles" / "local.yaml"), "--dry-run",
                              "--db", "mongodb://127.0.0.1:9/x", *args], capsys)
    one_line_error(code, err)
    assert expected in err
    assert not (tmp_path / "data").exists()


def test_missing_tls_key_file_is_one_line(capsys):
    uri = "mongodb://127.0.0.1:9/x?tls=true&tlsCertificateKeyFile=/nonexistent/key.pem"
    code, _out, err = run_cli(["status", "x", "--db", uri], capsys)
    assert code == 3 and err.startswith("error: ") and len(err.splitlines()) == 1
    assert "tlscertificatekeyfile file is not readable" in err.lower()


# -- exports under the Materials Project's (emmet's) names and types --------------------------


@pytest.mark.ferretdb
def test_exports_have_emmet_fields(ferret_campaign, tmp_path, capsys):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from ase.io import read
    from pymatgen.core import Structure

    uri, _ = ferret_campaign
    for fmt in ("json", "parquet", "csv", "extxyz"):
        assert main(["export", "tiny", "--format", fmt, "-o", str(tmp_path / f"x.{fmt}"),
                     "--db", uri]) == 0
    docs = json.loads((tmp_path / "x.json").read_text())
    by_id = {d["material_id"]: d for d in docs}
    atoms = read(tmp_path / "x.extxyz", index=":")
    for d in docs:
        s = Structure.from_dict(d["structure"])
        assert d["elements"] == sorted(d["elements"]) and isinstance(d["elements"], list)
        assert d["composition"] == {str(e): n for e, n in s.composition.get_el_amt_dict().items()}
        assert sum(d["composition_reduced"].values()) <= sum(d["composition"].values())
        assert d["formula_anonymous"] == s.composition.anonymized_formula
        assert set(d["symmetry"]) >= {"symbol", "number", "crystal_system"}
        assert d["volume"] == pytest.approx(d["volume_per_atom"] * d["nsites"], rel=1e-6)
        assert d["converged"] is True and d["last_updated"]
        if d["is_stable"]:
            assert d["decomposes_to"] == []
        else:
            assert d["decomposes_to"], d["material_id"]
            assert sum(p["amount"] for p in d["decomposes_to"]) == pytest.approx(1.0)
            for p in d["decomposes_to"]:
                assert by_id[p["material_id"]]["is_stable"]
                assert by_id[p["material_id"]]["formula_pretty"] == p["formula"]
    for a in atoms:  # density from the atoms' masses (ASE), independent of pymatgen
        d = by_id[a.info["material_id"]]
        grams = a.get_masses().sum() * 1.66053906660e-24
        assert d["density"] == pytest.approx(grams / (a.get_volume() * 1e-24), rel=1e-4)
        assert a.info["tier"] == "open" and a.info["rights"] == "CC-BY-4.0"
        assert a.info["export_control"] is False or a.info["export_control"] == np.False_
    cubic = [d for d in docs if d["symmetry"]["number"] == 225]
    assert cubic and all(d["symmetry"]["crystal_system"] == "cubic" for d in cubic)
    table = pq.read_table(tmp_path / "x.parquet")
    schema = table.schema
    assert schema.field("composition").type == pa.map_(pa.string(), pa.float64())
    assert schema.field("decomposes_to").type.value_type.names == ["material_id", "formula",
                                                                   "amount"]
    assert schema.field("elements").type == pa.list_(pa.string())
    units = json.loads(schema.metadata[b"matdx.units"])
    assert units["energy_above_hull"] == "eV/atom" and units["density"] == "g/cm³"
    assert table.num_rows == len(docs)
    rows = list(csv.DictReader(io.StringIO((tmp_path / "x.csv").read_text())))
    assert json.loads(rows[0]["elements"]) == docs[0]["elements"]


# -- hull figures ------------------------------------------------------------------------------


@pytest.mark.ferretdb
def test_hull_figures(ferret_campaign, tmp_path, capsys):
    from pymatgen.core import Composition

    from matdx.analysis.plots import OFF_SCALE, hull_figure
    from matdx.store.access import Caller
    from matdx.workflows.context import open_store

    uri, _ = ferret_campaign
    store, _ = open_store(uri)
    rows = store.summaries("tiny", Caller("anyone"))
    # one record pushed off the scale: drawn on the top edge, not hidden
    high = {**next(r for r in rows if r["chemsys"] == "Au-Cu"), "material_id": "high",
            "formation_energy_per_atom": 0.8, "energy_above_hull": 0.8, "is_stable": False}
    fig = hull_figure([*rows, high], title="tiny · emt pre-screen")
    panels = [a for a in fig.axes if a.get_title()]
    assert [a.get_title() for a in panels] == ["Au–Cu", "Au–Pt", "Cu–Pt"]
    assert len(fig.axes) == len(panels) + 1  # one shared colour bar
    assert fig.get_suptitle() == "Convex hulls: tiny · emt pre-screen"
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert {"hull", "stable (on the hull)"} <= set(labels)
    assert any("at the edge" in t for t in labels)
    edge = next(c for c in panels[0].collections if c.get_label().endswith("(at the edge)"))
    x = Composition(high["formula_pretty"]).get_atomic_fraction("Cu")
    assert edge.get_offsets().tolist() == [[pytest.approx(x), OFF_SCALE]]
    assert panels[0].get_ylim()[1] == pytest.approx(OFF_SCALE)
    fmt = {a.yaxis.get_major_formatter().fmt for a in panels}
    assert fmt == {"%.2f"}
    # a ternary system as a composition triangle, through the command line
    code = main(["plot", "tiny", "hull", "--chemsys", "Au-Cu-Pt", "-o", str(tmp_path / "t.png"),
                 "--db", uri])
    assert code == 0 and (tmp_path / "t.png").stat().st_size > 10_000
    from matdx.analysis.plots import ternary_figure

    fig = ternary_figure(rows, "Au-Cu-Pt", "tiny")
    ax = fig.axes[0]
    n_ternary = sum(r["nelements"] == 3 for r in rows)
    assert f"{n_ternary} ternary materials computed" in ax.get_title()
    assert {t.get_text() for t in ax.texts} >= {"Au", "Cu", "Pt"}
