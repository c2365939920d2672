"""The spine end to end against FerretDB: campaign file → FireWorks → EMT → store → rank."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pymongo
import pytest
from ase import Atoms
from ase.calculators.emt import EMT
from ase.filters import FrechetCellFilter
from ase.io import read
from ase.optimize import BFGS
from pymatgen.core import Structure

from matdx.cli.main import main
from matdx.generation.dedup import deduplicate
from matdx.store.codec import unpack
from matdx.workflows.campaign import load_campaign
from matdx.workflows.runner import candidates_with_references, submit_campaign

pytestmark = pytest.mark.ferretdb
ROOT = Path(__file__).resolve().parents[1]
CAMPAIGN = ROOT / "workflows" / "cu_au_pt.yaml"


@pytest.fixture(scope="module")
def ran(ferret_base, tmp_path_factory):
    """Run the Cu-Au-Pt campaign once for the module; yield (uri, db, report)."""
    import os
    import uuid

    os.environ["MATDX_DATA_DIR"] = str(tmp_path_factory.mktemp("data"))
    name = f"t_e2e_{uuid.uuid4().hex[:8]}"
    uri = ferret_base + name
    report = submit_campaign(load_campaign(CAMPAIGN), db_uri=uri)
    client = pymongo.MongoClient(ferret_base)
    yield uri, client[name], report
    client.drop_database(name)


def counts(db) -> dict[str, int]:
    return {c: db[c].count_documents({}) for c in sorted(db.list_collection_names())}


def test_campaign_completes_with_one_material_per_unique_candidate(ran):
    _, db, report = ran
    loaded = load_campaign(CAMPAIGN)
    from matdx.core.progress import NullProgress

    cands = candidates_with_references(loaded.spec, NullProgress())
    unique = len(deduplicate([c.structure for c in cands]).groups)
    assert report.n_raw == len(cands) > unique
    assert report.n_unique == unique
    assert db.materials.count_documents({}) == unique
    assert db.campaign_materials.count_documents({"campaign": "cu-au-pt"}) == unique
    assert db.calculations.count_documents({"status": "completed"}) == unique
    assert db.calculations.count_documents({"status": "failed"}) == 0
    assert db.summaries.count_documents({"campaign": "cu-au-pt"}) == unique
    states = {d["state"] for d in db.fireworks.find({}, {"state": 1})}
    assert states == {"COMPLETED"}
    n_batches = db.fireworks.count_documents({"spec._matdx.kind": "compute", "spec._matdx.step": "prescreen"})
    assert n_batches == -(-unique // loaded.spec.batch_size)


def test_stored_energies_reproduce_with_a_fresh_emt_relaxation(ran):
    _, db, _ = ran
    rng = np.random.default_rng(3)
    mats = list(db.materials.find({}))
    for i in rng.choice(len(mats), size=10, replace=False):
        m = unpack(mats[i])
        s = Structure.from_dict(m["structure"])
        atoms = Atoms([x.specie.symbol for x in s], positions=s.cart_coords,
                      cell=s.lattice.matrix, pbc=True)
        atoms.calc = EMT()
        BFGS(FrechetCellFilter(atoms), logfile=None).run(fmax=0.05, steps=300)
        calc = db.calculations.find_one({"material_id": m["material_id"]})
        stored = calc["output"]["energy_per_atom"]
        assert abs(atoms.get_potential_energy() / len(atoms) - stored) < 1e-4


def summary_by_source(db, source: str, formula: str) -> dict:
    sources = [source, f"reference:{source}"]
    ids = [d["material_id"] for d in db.materials.find({"source": {"$in": sources},
                                                         "formula_pretty": formula})]
    assert ids, (source, formula)
    return db.summaries.find_one({"material_id": ids[0]})


def test_known_emt_facts_hold(ran):
    _, db, _ = ran
    fcc = summary_by_source(db, "fcc", "Cu")
    bcc = summary_by_source(db, "bcc", "Cu")
    assert fcc["energy_per_atom"] < bcc["energy_per_atom"]
    l12 = summary_by_source(db, "L1_2", "Cu3Au")
    assert l12["formation_energy_per_atom"] < 0
    # elemental references have zero formation energy, nothing lies below the hull
    assert all(d["energy_above_hull"] >= 0 for d in db.summaries.find({}))
    stable = db.summaries.count_documents({"is_stable": True})
    assert 3 <= stable < db.summaries.count_documents({})


def test_rerun_adds_no_records_and_no_calculations(ran):
    uri, db, _ = ran
    before = counts(db)
    calc_ids = sorted(d["_id"] for d in db.calculations.find({}, {"_id": 1}))
    report = submit_campaign(load_campaign(CAMPAIGN), db_uri=uri)
    assert report.n_submitted == 0 and report.wf_id is None
    assert report.n_done_before == report.n_unique
    assert counts(db) == before
    assert sorted(d["_id"] for d in db.calculations.find({}, {"_id": 1})) == calc_ids


def test_workflows_stay_normal_fireworks_workflows(ran, tmp_path):
    uri, _, _ = ran
    lpad_file = tmp_path / "my_launchpad.yaml"
    lpad_file.write_text(f"host: {uri}\nname: {uri.rsplit('/', 1)[1]}\nuri_mode: true\n")
    lpad = Path(sys.executable).with_name("lpad")
    out = subprocess.run([str(lpad), "-l", str(lpad_file), "get_wflows", "-d", "more"],
                         capture_output=True, text=True, check=True).stdout
    assert "matdx:cu-au-pt" in out and "COMPLETED" in out


def test_cli_results_export_and_plot(ran, tmp_path, capsys):
    uri, db, _ = ran
    assert main(["results", "cu-au-pt", "--top", "5", "--format", "table", "--db", uri]) == 0
    table = capsys.readouterr().out
    assert "top 5 by energy_above_hull" in table
    assert main(["results", "cu-au-pt", "--top", "5", "--db", uri]) == 0  # a pipe: CSV
    piped = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert len(piped) == 5 and piped["energy_above_hull"].is_monotonic_increasing
    assert main(["status", "cu-au-pt", "--db", uri]) == 0
    assert "COMPLETED" in capsys.readouterr().out

    n = db.summaries.count_documents({})
    pq = tmp_path / "r.parquet"
    assert main(["export", "cu-au-pt", "--format", "parquet", "-o", str(pq), "--db", uri]) == 0
    df = pd.read_parquet(pq)
    assert len(df) == n
    row = df.iloc[0]
    stored = db.summaries.find_one({"material_id": row["material_id"]})
    assert row["energy_above_hull"] == pytest.approx(stored["energy_above_hull"], abs=1e-12)

    csv = tmp_path / "r.csv"
    assert main(["export", "cu-au-pt", "--format", "csv", "-o", str(csv), "--db", uri]) == 0
    assert len(pd.read_csv(csv)) == n

    xyz = tmp_path / "r.extxyz"
    assert main(["export", "cu-au-pt", "--format", "extxyz", "-o", str(xyz), "--db", uri]) == 0
    frames = read(xyz, index=":")
    assert len(frames) == n
    f0 = frames[0]
    calc = db.calculations.find_one({"material_id": f0.info["material_id"]})
    assert f0.get_potential_energy() == pytest.approx(calc["output"]["energy"], abs=1e-9)

    png = tmp_path / "hull.png"
    assert main(["plot", "cu-au-pt", "hull", "-o", str(png), "--db", uri]) == 0
    assert png.stat().st_size > 10_000
    assert png.read_bytes()[:4] == b"\x89PNG"
