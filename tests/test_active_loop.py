"""``matdx campaign next``: train on a run subset, pick, queue and compute what comes next.

A Cu–Au–Pt binary campaign of 93 unique candidates is first run on a seeded subset of 25
(``max_candidates``); every ``next`` must then compute exactly ``--budget`` new distinct
materials, none computed before, trained on what the caller may read, and record why.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pymongo
import pytest

from matdx.cli.main import main
from matdx.ml import data_snapshot_id
from matdx.workflows.campaign import load_campaign
from matdx.workflows.runner import submit_campaign

pytestmark = pytest.mark.ferretdb

NAME = "loop-test"
CAMPAIGN = f"""\
name: {NAME}
seed: 3
chemical_space:
  elements: [Cu, Au, Pt]
  max_components: 2
  prototypes: [fcc, bcc, hcp, L1_2, L1_0, B2]
  orderings:
    parents: [fcc]
    sizes: [2, 3, 4]
  max_atoms: 8
prescreen:
  engine: emt
batch_size: 4
max_candidates: 25
data:
  tier: shared-closed
  owner: alloy-lab
  groups: [ml-team]
"""
MEMBER = ["--user", "mia", "--group", "ml-team"]
OUTSIDER = ["--user", "eve", "--group", "other"]


def campaign_file(tmp_path: Path) -> Path:
    path = tmp_path / "loop.yaml"
    path.write_text(CAMPAIGN)
    return path


def database(uri: str) -> pymongo.database.Database:
    base, name = uri.rsplit("/", 1)
    return pymongo.MongoClient(base + "/")[name]


def computed(db: pymongo.database.Database) -> set[str]:
    return {d["material_id"] for d in db.calculations.find({"status": "completed"})}


def visible_snapshot(db: pymongo.database.Database) -> str:
    rows = list(db.summaries.find({"campaign": NAME}))
    df = pd.DataFrame({"material_id": [r["material_id"] for r in rows],
                       "formation_energy_per_atom": [r["formation_energy_per_atom"] for r in rows]})
    return data_snapshot_id(df, "formation_energy_per_atom")


def next_(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["campaign", "next", *args])
    out = capsys.readouterr()
    return code, out.out, out.err.strip()


def check_pick(db: pymongo.database.Database, before: set[str], budget: int,
               strategy: str) -> dict:
    after = computed(db)
    new = after - before
    assert before <= after
    assert len(new) == budget == len(after) - len(before)
    rec = db.picks.find_one({"campaign": NAME, "strategy": strategy})
    assert rec is not None
    picked = [p["material_id"] for p in rec["picks"]]
    assert len(picked) == len(set(picked)) == budget and set(picked) == new
    assert [p["rank"] for p in rec["picks"]] == list(range(1, budget + 1))
    for p in rec["picks"]:
        assert math.isfinite(p["predicted_mean"]) and p["predicted_std"] >= 0
        assert math.isfinite(p["predicted_hull_distance"])
    assert rec["n_train"] == len(before) and rec["model"]["n_train"] == len(before)
    assert 0 < rec["cv_mae"] < 0.2 and rec["model"]["model"] == "random_forest"
    assert rec["target"] == "formation_energy_per_atom" and rec["budget"] == budget
    assert (rec["tier"], rec["owner"], rec["groups"], rec["by"]) == (
        "shared-closed", "alloy-lab", ["ml-team"], "mia")
    fws = list(db.fireworks.find({"spec._matdx.pick_id": rec["_id"]}))
    assert {f["state"] for f in fws} == {"COMPLETED"}
    assert sum(f["spec"]["_matdx"]["n"] for f in fws) == budget
    assert {(f["spec"]["_matdx"]["kind"], f["spec"]["_matdx"]["step"]) for f in fws} == {
        ("compute", "prescreen"), ("analyse", "prescreen")}
    assert rec["wf_id"] == min(f["fw_id"] for f in fws)
    # the analysis ran: the picks have summaries with formation energies
    rows = {d["material_id"]: d for d in db.summaries.find({"campaign": NAME})}
    assert set(rows) == after
    assert all(rows[m]["formation_energy_per_atom"] is not None for m in new)
    return rec


def test_next_computes_budget_new_materials_and_records_the_pick(db_uri, tmp_path, capsys):
    path = campaign_file(tmp_path)
    db = database(db_uri)
    report = submit_campaign(load_campaign(path), db_uri=db_uri)
    c0 = computed(db)
    assert report.n_unique == len(c0) == 25
    snap0 = visible_snapshot(db)

    # outsiders see no campaign (tiers), and are told so in one line
    code, _, err = next_([str(path), "--budget", "10", "--db", db_uri, *OUTSIDER], capsys)
    assert code == 2 and err.startswith("error: unknown campaign 'loop-test'")
    assert len(err.splitlines()) == 1
    assert db.picks.count_documents({}) == 0 and computed(db) == c0

    code, out, _ = next_([str(path), "--budget", "10", "--run", "--db", db_uri, *MEMBER], capsys)
    assert code == 0, out
    first = check_pick(db, c0, 10, "ucb")
    assert first["snapshot_id"] == snap0  # trained on exactly the 25 visible results
    assert first["_id"] in out and "10 picked by ucb" in out
    assert first["n_unique"] == 93 and first["n_pool"] == 93 - 25

    c1 = computed(db)
    code, out, _ = next_([str(path), "--budget", "10", "--strategy", "greedy", "--run",
                          "--db", db_uri, *MEMBER], capsys)
    assert code == 0, out
    second = check_pick(db, c1, 10, "greedy")
    assert second["_id"] != first["_id"] and second["snapshot_id"] != first["snapshot_id"]
    assert not {p["material_id"] for p in second["picks"]} & {
        p["material_id"] for p in first["picks"]}
    assert len(computed(db)) == 45

    # the records are read with tiers, and follow the campaign's tier changes
    assert main(["campaign", "picks", NAME, "--db", db_uri, *MEMBER]) == 0
    out = capsys.readouterr().out
    assert first["_id"] in out and second["_id"] in out
    assert main(["campaign", "picks", NAME, "--db", db_uri, *OUTSIDER]) == 2
    assert main(["data", "set-tier", "closed", "--campaign", NAME, "--db", db_uri,
                 "--user", "alloy-lab"]) == 0
    assert {d["tier"] for d in db.picks.find({})} == {"closed"}


def test_next_refuses_bad_budget_and_campaigns_without_results(db_uri, tmp_path, capsys):
    path = campaign_file(tmp_path)
    code, _, err = next_([str(path), "--budget", "0", "--db", db_uri], capsys)
    assert (code, err) == (2, "error: budget must be at least 1 (got 0)")
    code, _, err = next_([str(path), "--strategy", "best", "--db", db_uri], capsys)
    assert code == 2 and "unknown strategy 'best'" in err
    base, name = db_uri.rsplit("/", 1)
    assert name not in pymongo.MongoClient(base + "/").list_database_names()

    code, _, err = next_([str(path), "--db", db_uri, *MEMBER], capsys)
    assert code == 2 and err.startswith("error: unknown campaign 'loop-test'")

    submit_campaign(load_campaign(path), launch=False, db_uri=db_uri)  # queued, not computed
    db = database(db_uri)
    n_fws = db.fireworks.count_documents({})
    code, _, err = next_([str(path), "--db", db_uri, *MEMBER], capsys)
    assert code == 2 and "nothing computed yet" in err and len(err.splitlines()) == 1
    assert db.fireworks.count_documents({}) == n_fws and db.picks.count_documents({}) == 0
