"""Data tiers and rights, enforced on every read path; query validation; exports; blobs."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pandas as pd
import pymongo
import pytest
from ase.io import read

from campaigns import loaded
from matdx.cli.main import main
from matdx.core.errors import InputError
from matdx.store import query as q
from matdx.store.access import Caller
from matdx.workflows.context import open_store
from matdx.workflows.runner import submit_campaign

pytestmark = pytest.mark.ferretdb

CAMPAIGNS = {
    # name: (elements, data policy)
    "c-open": (["Cu", "Au"], {"tier": "open", "owner": "alice"}),
    "c-shared": (["Ni", "Pd"], {"tier": "shared-closed", "owner": "alice", "groups": ["teamA"]}),
    "c-closed": (["Ag", "Pt"], {"tier": "closed", "owner": "projX"}),
}
CALLERS = {
    "owner": Caller("alice", ("projX",)),
    "member": Caller("carol", ("teamA",)),
    "outsider": Caller("dave", ("other",)),
    "anonymous": Caller("anonymous"),
}
ALLOWED = {
    "owner": {"c-open", "c-shared", "c-closed"},
    "member": {"c-open", "c-shared"},
    "outsider": {"c-open"},
    "anonymous": {"c-open"},
}


@pytest.fixture(scope="module")
def world(ferret_base, tmp_path_factory):
    import os

    os.environ["MATDX_DATA_DIR"] = str(tmp_path_factory.mktemp("data"))
    name = f"t_tiers_{uuid.uuid4().hex[:8]}"
    uri = ferret_base + name
    sizes = {}
    for cname, (els, data) in CAMPAIGNS.items():
        sizes[cname] = submit_campaign(loaded(cname, els, data), db_uri=uri).n_unique
    client = pymongo.MongoClient(ferret_base)
    yield uri, client[name], sizes
    client.drop_database(name)


def campaigns_of(rows) -> set[str]:
    return {r["campaign"] for r in rows}


@pytest.mark.parametrize("who", list(CALLERS))
def test_tier_matrix_over_every_read_path(world, who, tmp_path, capsys):
    uri, _db, sizes = world
    open_store(uri)
    caller = CALLERS[who]
    allowed = ALLOWED[who]
    expected = sum(sizes[c] for c in allowed)
    store, _ = open_store(uri)
    # query
    rows = q.run_query(q.MaterialQuery(), caller)
    assert campaigns_of(rows) == allowed and len(rows) == expected
    # counts
    assert q.count(q.MaterialQuery(), caller) == expected
    for cname in CAMPAIGNS:
        n = q.count(q.MaterialQuery(campaign=cname), caller)
        assert n == (sizes[cname] if cname in allowed else 0)
    # results / plot data (the same read the CLI uses)
    for cname in CAMPAIGNS:
        got = store.summaries(cname, caller)
        assert len(got) == (sizes[cname] if cname in allowed else 0)
    # campaign existence, status and results through the CLI
    user = ["--user", caller.user] + [a for g in caller.groups for a in ("--group", g)]
    for cname in CAMPAIGNS:
        code = main(["status", cname, "--db", uri, *user])
        err = capsys.readouterr().err
        if cname in allowed:
            assert code == 0
        else:
            assert code == 2 and f"unknown campaign {cname!r}" in err
            known = err.split("(known:")[1].rstrip(")\n ") if "(known:" in err else ""
            assert {k.strip() for k in known.split(",") if k.strip()} <= allowed
    # export
    for cname in CAMPAIGNS:
        out = tmp_path / f"{cname}.parquet"
        code = main(["export", cname, "-o", str(out), "--db", uri, *user])
        capsys.readouterr()
        if cname in allowed:
            assert code == 0 and len(pd.read_parquet(out)) == sizes[cname]
        else:
            assert code == 2 and not out.exists()
    # ML training set: the frame the models train on comes from the same query layer
    frame = q.frame(q.MaterialQuery(), caller)
    assert set(frame["campaign"]) == allowed and len(frame) == expected


def test_derived_values_are_hidden_when_built_from_invisible_records(world):
    uri, db, _ = world
    _store, _ = open_store(uri)
    from matdx.store.governance import set_tier
    from matdx.workflows.analyse import analyse_step

    # close one Cu-Au compound; recompute the campaign's hull
    target = db.summaries.find_one({"campaign": "c-open", "nelements": 2, "is_stable": True})
    set_tier(CALLERS["owner"], "closed", material_id=target["material_id"], owner="projX")
    doc = db.campaigns.find_one({"_id": "c-open"})
    spec = loaded("c-open", *CAMPAIGNS["c-open"])
    from matdx.workflows.context import default_db

    with default_db(uri):
        analyse_step("c-open", spec.step_plan()[0],
                     {k: doc[k] for k in ("tier", "owner", "groups", "rights", "export_control")})
    outsider = q.run_query(q.MaterialQuery(campaign="c-open"), CALLERS["outsider"])
    owner = q.run_query(q.MaterialQuery(campaign="c-open"), CALLERS["owner"])
    assert len(owner) == len(outsider) + 1
    assert target["material_id"] not in {r["material_id"] for r in outsider}
    binaries = [r for r in outsider if r["nelements"] == 2]
    assert binaries and all(r["energy_above_hull"] is None and r.get("derived_hidden")
                            for r in binaries)
    assert all(r["energy_above_hull"] is not None for r in owner)
    # the audit trail records the change
    hist = db.materials.find_one({"_id": target["material_id"]})["tier_history"]
    assert hist[-1]["by"] == "alice" and hist[-1]["to_tier"] == "closed"
    # only an owner may change a tier; to an outsider a closed material is unknown, with
    # the same message as a made-up identifier
    with pytest.raises(InputError) as hidden:
        set_tier(CALLERS["outsider"], "open", material_id=target["material_id"])
    with pytest.raises(InputError) as missing:
        set_tier(CALLERS["outsider"], "open", material_id="mdx-0000000000000000")
    assert str(hidden.value) == str(missing.value).replace("mdx-0000000000000000",
                                                           target["material_id"])
    with pytest.raises(InputError, match="owned by others"):
        set_tier(CALLERS["member"], "open", campaign="c-shared")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"colour": "red"}, "field colour: unknown query field"),
        ({"spacegroup": "Fm-3m"}, "field spacegroup"),
        ({"ranges": {"energy_above_hull": {"min": 1, "max": 0}}}, "empty range"),
        ({"ranges": {"$where": {"min": 0}}}, "no range on '$where'"),
        ({"formula": {"$where": "sleep(1000)"}}, "field formula"),
        ({"$where": "this.a == 1"}, "unknown query field"),
        ({"chemsys": "Cu;Au"}, "malformed chemical system"),
        ({"elements_all": ["Cu", "Xx"]}, "unknown element 'Xx'"),
        ({"sort": "$natural"}, "cannot sort by"),
        ({"fields": ["structure.$where"]}, "unknown field"),
        ({"limit": -1}, "field limit"),
    ],
)
def test_bad_and_injected_queries_are_refused(data, message):
    with pytest.raises(InputError) as info:
        q.parse_query(data)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_bad_range_text_and_cli_exit_code(world, capsys):
    uri, _, _ = world
    with pytest.raises(InputError, match="FIELD:MIN:MAX"):
        q.parse_range("energy_above_hull:0")
    assert main(["query", "--range", "energy_above_hull:a:b", "--db", uri]) == 2
    assert "bounds must be numbers" in capsys.readouterr().err


def test_filters_sort_pagination_and_projection(world):
    uri, _, _sizes = world
    open_store(uri)
    owner = CALLERS["owner"]
    cu_au = q.run_query(q.MaterialQuery(elements_all=["Cu", "Au"]), owner)
    assert cu_au and all(set(r["elements"]) == {"Au", "Cu"} for r in cu_au)
    only = q.run_query(q.MaterialQuery(elements_only=["Cu", "Au"]), owner)
    assert {r["chemsys"] for r in only} == {"Au", "Cu", "Au-Cu"}
    anyof = q.run_query(q.MaterialQuery(elements_any=["Pt"]), owner)
    assert {r["campaign"] for r in anyof} == {"c-closed"}
    page1 = q.run_query(q.MaterialQuery(sort="energy_per_atom", limit=3), owner)
    page2 = q.run_query(q.MaterialQuery(sort="energy_per_atom", limit=3, skip=3), owner)
    energies = [r["energy_per_atom"] for r in page1 + page2]
    assert energies == sorted(energies) and len(energies) == 6
    hull = q.run_query(q.MaterialQuery(ranges={"energy_above_hull": {"max": 1e-9}},
                                       fields=["material_id", "energy_above_hull"]), owner)
    assert hull and all(set(r) == {"material_id", "energy_above_hull"} for r in hull)
    assert all(r["energy_above_hull"] <= 1e-9 for r in hull)
    fcc = q.run_query(q.MaterialQuery(spacegroup=225, formula="Cu"), owner)
    assert fcc and all(r["formula_pretty"] == "Cu" for r in fcc)
    plan = q.explain(q.MaterialQuery(chemsys="Au-Cu"), owner)
    assert "queryPlanner" in plan


def test_exports_round_trip_and_export_control(world, tmp_path, capsys):
    uri, db, _ = world
    _store, _ = open_store(uri)
    alice = ["--user", "alice", "--group", "projX"]
    opt = tmp_path / "o.json"
    assert main(["export", "c-shared", "--format", "optimade", "-o", str(opt), "--db", uri,
                 *alice]) == 0
    doc = json.loads(opt.read_text())
    entry = doc["data"][0]
    stored = db.summaries.find_one({"campaign": "c-shared", "material_id": entry["id"]})
    attrs = entry["attributes"]
    assert attrs["_matdx_energy_per_atom"] == stored["energy_per_atom"]
    assert attrs["nelements"] == len(attrs["elements"]) == stored["nelements"]
    assert len(attrs["cartesian_site_positions"]) == attrs["nsites"] == len(
        attrs["species_at_sites"])
    xyz = tmp_path / "o.extxyz"
    assert main(["export", "c-shared", "--format", "extxyz", "-o", str(xyz), "--db", uri,
                 *alice]) == 0
    frames = {f.info["material_id"]: f for f in read(xyz, index=":")}
    calc = db.calculations.find_one({"material_id": entry["id"]})
    f = frames[entry["id"]]
    assert f.get_potential_energy() == pytest.approx(calc["output"]["energy"], abs=1e-9)
    forces = np.array([x["__list__"] for x in calc["output"]["forces"]])
    assert np.allclose(f.get_forces(), forces, atol=1e-9)
    csv = tmp_path / "o.csv"
    assert main(["export", "c-shared", "--format", "csv", "-o", str(csv), "--db", uri,
                 *alice]) == 0
    df = pd.read_csv(csv).set_index("material_id")
    assert df.loc[entry["id"], "energy_per_atom"] == pytest.approx(stored["energy_per_atom"])
    capsys.readouterr()
    # export control: refused without the flag, nothing written
    from matdx.store.governance import set_tier

    set_tier(CALLERS["owner"], "shared-closed", campaign="c-shared", groups=["teamA"],
             export_control=True)
    blocked = tmp_path / "blocked.parquet"
    assert main(["export", "c-shared", "-o", str(blocked), "--db", uri, *alice]) == 2
    assert "export-controlled" in capsys.readouterr().err and not blocked.exists()
    assert main(["export", "c-shared", "-o", str(blocked), "--db", uri, *alice,
                 "--allow-export-controlled"]) == 0


def test_large_arrays_go_to_gridfs(world):
    uri, db, _ = world
    open_store(uri)
    from matdx.store.blobs import get_array, put_array

    traj = np.random.default_rng(0).normal(size=(200, 32, 3))
    fid = put_array("traj.npy", traj, campaign="c-open", kind="trajectory")
    back = get_array(fid)
    assert back.shape == traj.shape and np.array_equal(back, traj)
    meta = db["matdx_blobs.files"].find_one({})["metadata"]
    assert meta["shape"] == [200, 32, 3] and meta["kind"] == "trajectory"


def test_migration_brings_old_records_to_the_current_schema(world):
    uri, db, _ = world
    store, _ = open_store(uri)
    from matdx.store.documents import SCHEMA_VERSION

    db.summaries.update_many({"campaign": "c-closed"},
                             {"$set": {"schema_version": 1}, "$unset": {"derived_access": ""}})
    seen = store.migrate(dry_run=True)
    assert seen == {"summaries@v1": db.summaries.count_documents({"campaign": "c-closed"})}
    store.migrate()
    assert db.summaries.count_documents({"schema_version": 1}) == 0
    assert db.summaries.count_documents({"derived_access": {"$exists": False}}) == 0
    assert db.summaries.count_documents({"schema_version": SCHEMA_VERSION}) == \
        db.summaries.count_documents({})


def test_migration_to_v4_keeps_the_formulas_of_decomposes_to(world):
    uri, db, _ = world
    store, _ = open_store(uri)
    doc = db.summaries.find_one({"campaign": "c-open", "is_stable": False})
    db.summaries.update_one({"_id": doc["_id"]}, {"$set": {
        "schema_version": 3, "decomposes_to": ["Au", "Cu3Au"],
        "steps": {"later": {"decomposes_to": ["Cu"]}}}})
    assert store.migrate(dry_run=True) == {"summaries@v3": 1}
    store.migrate()
    new = db.summaries.find_one({"_id": doc["_id"]})
    assert new["schema_version"] == 4
    assert new["decomposes_to"] == [{"material_id": None, "formula": "Au", "amount": None},
                                    {"material_id": None, "formula": "Cu3Au", "amount": None}]
    assert new["steps"]["later"]["decomposes_to"][0]["formula"] == "Cu"
