"""The data service as an outsider, a partner and an owner would meet it.

One FerretDB with authentication switched on (only the service's database user gets in),
three campaigns of two owners (open, shared-closed with ``teamA``, closed to ``projX``),
``matdx serve`` started as its own process, and every read path (HTTP endpoints, the
OPTIMADE API, the Python client, the CLI through ``MATDX_API_URL``) tried with no token,
an outsider's, a partner's, an owner's, and forged, expired and revoked ones.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pymongo
import pytest

from campaigns import loaded
from matdx.cli.main import main
from matdx.store.access import Caller

pytestmark = pytest.mark.ferretdb

ROOT = Path(__file__).resolve().parents[1]
CAMPAIGNS = {
    "c-open": (["Cu", "Au"], {"tier": "open", "owner": "alice"}),
    "c-shared": (["Ni", "Pd"], {"tier": "shared-closed", "owner": "alice", "groups": ["teamA"]}),
    "c-closed": (["Ag", "Pt"], {"tier": "closed", "owner": "projX"}),
}
IDENTITIES = {
    "anonymous": None,
    "outsider": ("dave", ["other"]),
    "partner": ("carol", ["teamA"]),
    "owner": ("alice", ["projX"]),
}
VISIBLE = {
    "anonymous": {"c-open"},
    "outsider": {"c-open"},
    "partner": {"c-open", "c-shared"},
    "owner": {"c-open", "c-shared", "c-closed"},
}
TIER_OF = {"c-open": "open", "c-shared": "shared-closed", "c-closed": "closed"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, what: str, seconds: float = 60) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what} did not come up")


@pytest.fixture(scope="module")
def auth_db(tmp_path_factory):
    """A FerretDB that refuses every command without authentication (SCRAM-SHA-256)."""
    binary = os.environ.get("MATDX_FERRETDB_BIN")
    if not binary:
        pytest.fail("MATDX_FERRETDB_BIN is not set: source .ci/services.env")
    state = tmp_path_factory.mktemp("ferret-auth")
    (state / "data").mkdir()
    port = free_port()
    password = uuid.uuid4().hex
    proc = subprocess.Popen(
        [binary, "--handler=sqlite", f"--sqlite-url=file:{state}/data/",
         f"--listen-addr=127.0.0.1:{port}", "--telemetry=disable", "--log-level=error",
         "--debug-addr=-", f"--state-dir={state}", "--test-enable-new-auth",
         "--setup-database=matdx", "--setup-username=matdx-service",
         f"--setup-password={password}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    uri = f"mongodb://matdx-service:{password}@127.0.0.1:{port}/matdx?authMechanism=SCRAM-SHA-256"
    wait_for(lambda: pymongo.MongoClient(uri, serverSelectionTimeoutMS=500).matdx.command("ping"),
             "FerretDB with authentication")
    yield {"uri": uri, "port": port, "password": password}
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def world(auth_db, tmp_path_factory):
    from matdx.store import tokens
    from matdx.workflows.context import open_store
    from matdx.workflows.runner import submit_campaign

    data_dir = tmp_path_factory.mktemp("data")
    os.environ["MATDX_DATA_DIR"] = str(data_dir)
    uri = auth_db["uri"]
    sizes = {name: submit_campaign(loaded(name, els, data), db_uri=uri).n_unique
             for name, (els, data) in CAMPAIGNS.items()}
    open_store(uri)
    keys = {who: tokens.issue(*ident)[1] for who, ident in IDENTITIES.items() if ident}
    port = free_port()
    env = {**os.environ, "MATDX_DB_URI": uri, "MATDX_DATA_DIR": str(data_dir),
           "PYTHONPATH": str(ROOT / "src")}
    server = subprocess.Popen(
        [sys.executable, "-m", "matdx.cli.main", "serve", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(url + "/v1/whoami").status_code == 200, "matdx serve")
    yield {"uri": uri, "url": url, "keys": keys, "sizes": sizes, "server": server,
           "db": pymongo.MongoClient(uri).matdx}
    server.terminate()
    out, _ = server.communicate(timeout=30)
    assert auth_db["password"] not in out  # the service never prints its credentials


def headers(world, who):
    key = world["keys"].get(who)
    return {"Authorization": f"Bearer {key}"} if key else {}


def get(world, who, path, **params):
    return httpx.get(world["url"] + path, headers=headers(world, who), params=params, timeout=60)


# --- the database itself ----------------------------------------------------------------
def test_the_database_refuses_callers_without_the_service_credentials(world, auth_db):
    plain = f"mongodb://127.0.0.1:{auth_db['port']}/matdx"
    with pytest.raises(pymongo.errors.OperationFailure, match="requires authentication"):
        pymongo.MongoClient(plain, serverSelectionTimeoutMS=3000).matdx.materials.find_one()
    wrong = world["uri"].replace(auth_db["password"], "guess")
    with pytest.raises(pymongo.errors.OperationFailure, match="Authentication failed"):
        pymongo.MongoClient(wrong, serverSelectionTimeoutMS=3000).matdx.materials.find_one()
    # a closed record is there, for the service's user only
    assert world["db"].materials.count_documents({"tier": "closed"}) == world["sizes"]["c-closed"]


def test_no_credentials_are_stored_with_the_campaigns(world, auth_db):
    for doc in world["db"].campaigns.find():
        assert auth_db["password"] not in json.dumps(doc, default=str)


# --- access matrix ----------------------------------------------------------------------
@pytest.mark.parametrize("who", list(IDENTITIES))
def test_access_matrix_over_every_endpoint(world, who):
    visible = VISIBLE[who]
    expected_rows = sum(world["sizes"][c] for c in visible)
    ident = IDENTITIES[who]
    assert get(world, who, "/v1/whoami").json() == (
        {"user": ident[0], "groups": ident[1]} if ident else {"user": "anonymous", "groups": []})
    assert {c["name"] for c in get(world, who, "/v1/campaigns").json()["data"]} == visible
    unknown = get(world, who, "/v1/campaigns/no-such-campaign")
    for name in CAMPAIGNS:
        one, res = get(world, who, f"/v1/campaigns/{name}"), get(world, who,
                                                                 f"/v1/campaigns/{name}/results")
        if name in visible:
            assert one.status_code == 200 and one.json()["data"]["tier"] == TIER_OF[name]
            assert len(res.json()["data"]) == world["sizes"][name]
        else:  # indistinguishable from a campaign that does not exist
            assert one.status_code == res.status_code == unknown.status_code == 404
            assert one.json() == res.json() == {
                "error": unknown.json()["error"].replace("no-such-campaign", name)}
    rows = httpx.post(world["url"] + "/v1/query", headers=headers(world, who), timeout=60,
                      json={"limit": 1000}).json()["data"]
    assert len(rows) == expected_rows and {r["campaign"] for r in rows} == visible
    assert not any("derived_access" in r or "tier_history" in r for r in rows)
    count = httpx.post(world["url"] + "/v1/query/count", headers=headers(world, who),
                       json={}).json()["count"]
    assert count == expected_rows
    # OPTIMADE: list, count and single entries
    listing = get(world, who, "/optimade/v1/structures", page_limit=1000).json()
    assert listing["meta"]["data_returned"] == len(listing["data"]) == expected_rows
    assert {e["attributes"]["_matdx_tier"] for e in listing["data"]} == {
        TIER_OF[c] for c in visible}
    closed_id = world["db"].materials.find_one({"tier": "closed"})["_id"]
    single = get(world, who, f"/optimade/v1/structures/{closed_id}")
    missing = get(world, who, "/optimade/v1/structures/mdx-0000000000000000")
    if "c-closed" in visible:
        assert single.status_code == 200 and single.json()["data"]["id"] == closed_id
    else:
        assert single.status_code == missing.status_code
        assert single.json().get("data") == missing.json().get("data")
    filtered = get(world, who, "/optimade/v1/structures",
                   filter='elements HAS ANY "Ag","Pt"').json()["meta"]["data_returned"]
    assert filtered == (world["sizes"]["c-closed"] if "c-closed" in visible else 0)


@pytest.mark.parametrize("who", list(IDENTITIES))
def test_cli_and_client_read_through_the_service(world, who, monkeypatch, capsys):
    from matdx.client import Client

    monkeypatch.setenv("MATDX_API_URL", world["url"])
    monkeypatch.setenv("MATDX_TOKEN", world["keys"].get(who, ""))
    monkeypatch.delenv("MATDX_DB_URI", raising=False)
    visible = VISIBLE[who]
    client = Client()
    df = client.query(page=7)  # several pages, keyed by the last row
    assert len(df) == sum(world["sizes"][c] for c in visible)
    assert set(df["campaign"]) == visible and df["material_id"].is_unique is not None
    assert len(list(client.structures(page_limit=4))) == len(df)
    for name in CAMPAIGNS:
        code = main(["results", name, "--top", "0"])
        out, err = capsys.readouterr()
        if name in visible:
            assert code == 0 and name in out
        else:
            assert code == 2 and err.count("\n") == 1 and f"unknown campaign {name!r}" in err
    assert main(["query", "--format", "json", "--limit", "1000", "--fields",
                 "material_id,campaign"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert {r["campaign"] for r in shown} == visible


def test_flags_cannot_claim_an_identity_through_the_service(world, monkeypatch, capsys,
                                                           tmp_path):
    """Reproduction 1: ``--group <owner>`` printed a closed campaign's whole table."""
    monkeypatch.setenv("MATDX_API_URL", world["url"])
    monkeypatch.setenv("MATDX_TOKEN", world["keys"]["outsider"])
    assert main(["results", "c-closed", "--group", "projX", "--user", "alice"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "identity is the token's" in err
    assert main(["results", "c-closed"]) == 2
    assert "unknown campaign 'c-closed'" in capsys.readouterr().err
    # commands that read the database directly are refused while a service is configured
    out = tmp_path / "closed.csv"
    assert main(["export", "c-closed", "--format", "csv", "-o", str(out), "--group", "projX",
                 "--db", world["uri"]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "reads the database directly" in err and not out.exists()


@pytest.mark.parametrize("kind", ["forged", "expired", "revoked", "malformed", "not-bearer"])
def test_bad_tokens_are_refused_everywhere(world, kind, monkeypatch, capsys):
    from matdx.store import tokens
    from matdx.workflows.context import open_store

    open_store(world["uri"])
    if kind == "forged":  # a well-formed key that was never issued
        real = world["keys"]["owner"]
        key = real[:-4] + ("AAAA" if not real.endswith("AAAA") else "BBBB")
    elif kind == "expired":
        kid, key = tokens.issue("alice", ["projX"], days=1)
        world["db"].api_keys.update_one({"_id": kid}, {"$set": {"expires_at": (
            world["db"].api_keys.find_one({"_id": kid})["created_at"])}})
    elif kind == "revoked":
        kid, key = tokens.issue("alice", ["projX"])
        assert httpx.get(world["url"] + "/v1/whoami",
                         headers={"Authorization": f"Bearer {key}"}).json()["user"] == "alice"
        assert main(["token", "revoke", kid, "--db", world["uri"]]) == 0
    else:
        key = "alice" if kind == "malformed" else None
    auth = {"Authorization": f"Bearer {key}"} if key else {"Authorization": "Basic YWxpY2U6"}
    for path in ("/v1/whoami", "/v1/campaigns", "/v1/campaigns/c-open/results",
                 "/optimade/v1/structures", "/optimade/v1/info"):
        r = httpx.get(world["url"] + path, headers=auth)
        assert r.status_code == 401, path
        assert "closed" not in r.text and "c-open" not in r.text
    if key:
        monkeypatch.setenv("MATDX_API_URL", world["url"])
        monkeypatch.setenv("MATDX_TOKEN", key)
        assert main(["results", "c-open"]) == 4
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "refused the token" in err and key not in err


def test_keys_are_stored_as_digests_and_issued_by_the_cli(world, capsys):
    assert main(["token", "issue", "--user", "erin", "--group", "teamA", "--db", world["uri"]]) == 0
    key = capsys.readouterr().out.strip().splitlines()[-1]
    assert key.startswith("mdx_")
    stored = json.dumps(list(world["db"].api_keys.find()), default=str)
    assert key not in stored and key.split("_")[2] not in stored
    r = httpx.get(world["url"] + "/v1/whoami", headers={"Authorization": f"Bearer {key}"})
    assert r.json() == {"user": "erin", "groups": ["teamA"]}
    assert main(["token", "list", "--db", world["uri"]]) == 0
    assert key not in capsys.readouterr().out


def test_tier_changes_need_the_owner_token_and_record_it(world, monkeypatch, capsys):
    """Reproduction 3: ``set-tier --user anyone --group <owner>`` declassified a campaign."""
    monkeypatch.setenv("MATDX_API_URL", world["url"])
    monkeypatch.setenv("MATDX_TOKEN", world["keys"]["outsider"])
    assert main(["data", "set-tier", "open", "--campaign", "c-closed", "--user", "anyone",
                 "--group", "projX"]) == 2
    assert "identity is the token's" in capsys.readouterr().err
    assert main(["data", "set-tier", "open", "--campaign", "c-closed"]) == 2
    hidden = capsys.readouterr().err
    assert main(["data", "set-tier", "open", "--campaign", "c-nothing"]) == 2
    assert hidden == capsys.readouterr().err.replace("c-nothing", "c-closed")
    monkeypatch.setenv("MATDX_TOKEN", world["keys"]["partner"])  # sees it, does not own it
    assert main(["data", "set-tier", "open", "--campaign", "c-shared"]) == 2
    assert "owned by others" in capsys.readouterr().err
    assert world["db"].campaigns.find_one({"_id": "c-closed"})["tier"] == "closed"
    monkeypatch.setenv("MATDX_TOKEN", world["keys"]["owner"])
    assert main(["data", "set-tier", "closed", "--campaign", "c-closed", "--rights",
                 "internal"]) == 0
    doc = world["db"].campaigns.find_one({"_id": "c-closed"})
    assert doc["rights"] == "internal" and doc["tier_history"][-1]["by"] == "alice"


def test_export_controlled_records_reach_their_owner_only(world):
    """Reproduction 5 (query): export-controlled rows were printed to any reader."""
    db = world["db"]
    mid = db.summaries.find_one({"campaign": "c-shared"})["material_id"]
    db.summaries.update_one({"campaign": "c-shared", "material_id": mid},
                            {"$set": {"export_control": True}})
    try:
        for who, sees in (("partner", False), ("owner", True)):
            rows = httpx.post(world["url"] + "/v1/query", headers=headers(world, who),
                              json={"campaign": "c-shared", "limit": 1000}).json()["data"]
            assert (mid in {r["material_id"] for r in rows}) is sees
    finally:
        db.summaries.update_one({"campaign": "c-shared", "material_id": mid},
                                {"$set": {"export_control": False}})


def test_optimade_validator_reports_no_failure(world):
    """The optimade package's own validator, against the running service."""
    validator = Path(sys.executable).with_name("optimade-validator")
    for who in ("anonymous", "owner"):
        cmd = [str(validator), world["url"] + "/optimade", "--json"]
        if world["keys"].get(who):
            cmd += ["--headers", json.dumps(headers(world, who))]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        report = json.loads(done.stdout)
        assert report["failure_count"] == report["internal_failure_count"] == 0, report
        assert report["success_count"] >= 40 and done.returncode == 0


def test_the_python_api_needs_a_caller_for_tiered_reads(world):
    """Reproduction 2 (Python API): reads through the query layer apply the caller's tier."""
    from matdx.store import query as q
    from matdx.workflows.context import open_store

    open_store(world["uri"])
    rows = q.run_query(q.MaterialQuery(limit=1000), Caller("anonymous"))
    assert {r["campaign"] for r in rows} == {"c-open"}


# --- ownership, derived records, secrets, exports (reproductions 4-7) ---------------------
def test_a_campaign_file_cannot_take_over_another_owners_campaign(world, tmp_path, capsys):
    """Reproduction 4: reusing a closed campaign's name rewrote its record."""
    from matdx.core.errors import InputError
    from matdx.workflows.runner import submit_campaign

    db = world["db"]
    before = db.campaigns.find_one({"_id": "c-closed"})
    n_materials = db.materials.count_documents({})
    with pytest.raises(InputError, match="taken by another owner"):
        submit_campaign(loaded("c-closed", ["Cu", "Au"], {"tier": "open", "owner": "mallory"}),
                        db_uri=world["uri"])
    path = tmp_path / "takeover.yaml"
    path.write_text("name: c-closed\nchemical_space: {elements: [Cu], max_components: 1}\n"
                    "data: {tier: open, owner: mallory, export_control: false}\n")
    assert main(["run", str(path), "--db", world["uri"]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "taken by another owner" in err and "projX" not in err
    after = db.campaigns.find_one({"_id": "c-closed"})
    assert after == before and db.materials.count_documents({}) == n_materials


def test_dedup_and_computed_before_ignore_records_the_owner_may_not_read(world):
    """Reproduction 5 (dedup): a new campaign was deduplicated against closed records."""
    from matdx.workflows.runner import submit_campaign

    report = submit_campaign(loaded("bob-agpt", ["Ag", "Pt"], {"tier": "open", "owner": "bob"}),
                             db_uri=world["uri"])
    assert report.n_unique == world["sizes"]["c-closed"]
    assert report.n_reused == 0 and report.n_done_before == 0
    db = world["db"]
    closed = {d["_id"] for d in db.materials.find({"tier": "closed"}, {"_id": 1})}
    mine = [d["material_id"] for d in db.campaign_materials.find({"campaign": "bob-agpt"})]
    assert len(mine) == report.n_unique and not closed & set(mine)
    assert all(db.materials.find_one({"_id": m})["owner"] == "bob" for m in mine)
    # the open copies are computed and served to anyone; the closed ones still are not
    rows = get(world, "anonymous", "/v1/campaigns/bob-agpt/results").json()["data"]
    assert len(rows) == report.n_unique and all(r["tier"] == "open" for r in rows)


def test_a_pick_is_as_restrictive_as_its_training_data(world):
    """Reproduction 5 (picks): a pick trained on shared-closed results was stored open."""
    import pandas as pd

    from matdx.store.repository import Governance
    from matdx.workflows.active import pick_governance
    from matdx.workflows.context import open_store

    store, _ = open_store(world["uri"])
    owner = Caller("alice", ("projX",))
    labelled = pd.DataFrame({"material_id": [
        d["material_id"] for d in world["db"].summaries.find({"campaign": "c-shared"})]})
    gov = pick_governance(store, "c-shared", Governance(tier="open", owner="alice"), labelled,
                          owner)
    assert gov["tier"] == "shared-closed" and gov["groups"] == ["teamA"]
    labelled = pd.DataFrame({"material_id": [
        d["material_id"] for d in world["db"].summaries.find({"campaign": "c-closed"})]})
    gov = pick_governance(store, "c-closed", Governance(tier="open", owner="alice"), labelled,
                          owner)
    assert gov["tier"] == "closed"


def test_campaign_files_never_store_credentials(world, auth_db, tmp_path):
    """Reproduction 6 (stored): a password in ``store.uri`` was kept in ``campaigns.spec``."""
    from matdx.workflows.campaign import load_campaign
    from matdx.workflows.runner import submit_campaign

    path = tmp_path / "cred.yaml"
    path.write_text(f"name: c-cred\nchemical_space: {{elements: [Cu], max_components: 1}}\n"
                    f"store: {{uri: '{world['uri']}'}}\n")
    os.environ.pop("MATDX_DB_URI", None)
    submit_campaign(load_campaign(path))
    doc = world["db"].campaigns.find_one({"_id": "c-cred"})
    assert doc is not None and auth_db["password"] not in json.dumps(doc, default=str)
    assert doc["spec"]["store"]["uri"].startswith(f"mongodb://127.0.0.1:{auth_db['port']}/matdx")


def test_messages_never_show_credential_options(capsys, monkeypatch):
    """Reproduction 6 (printed): TLS key passwords and AWS tokens were printed."""
    from matdx.core.dburi import redact_uri, strip_credentials

    monkeypatch.setenv("MATDX_SERVER_TIMEOUT_MS", "300")
    uri = ("mongodb://u:PW0@127.0.0.1:1/m?tls=true&tlsCertificateKeyFilePassword=PW1"
           "&authMechanismProperties=AWS_SESSION_TOKEN:PW2,SERVICE_NAME:PW3")
    assert main(["status", "x", "--db", uri]) == 3
    err = capsys.readouterr().err
    assert "cannot reach the database" in err
    assert not any(f"PW{i}" in err for i in range(4))
    assert not any(f"PW{i}" in redact_uri(uri) + strip_credentials(uri) for i in range(4))
    assert strip_credentials(uri) == "mongodb://127.0.0.1:1/m?tls=true"


def test_optimade_export_validates_entry_by_entry(world, tmp_path):
    """Reproduction 7: no exported entry passed the optimade package's model."""
    from optimade.models import StructureResource

    out = tmp_path / "open.json"
    assert main(["export", "c-open", "--format", "optimade", "-o", str(out),
                 "--db", world["uri"]]) == 0
    entries = json.loads(out.read_text())["data"]
    assert len(entries) == world["sizes"]["c-open"]
    for entry in entries:
        StructureResource(**entry)
    formulas = {e["attributes"]["chemical_formula_reduced"]:
                e["attributes"]["chemical_formula_anonymous"] for e in entries}
    assert formulas.get("AuCu3", "A3B") == "A3B" and formulas.get("Au3Cu", "A3B") == "A3B"


def test_long_reads_continue_one_cursor_and_stay_tiered(world):
    """``/v1/materials`` pages: every visible material once; tokens do not carry identity."""
    from matdx.client import Client

    db = world["db"]
    for who in ("anonymous", "owner"):
        client = Client(world["url"], world["keys"].get(who, ""))
        rows = list(client.materials(page=3))
        ids = [r["material_id"] for r in rows]
        assert len(ids) == len(set(ids)) and ids == sorted(ids)
        # the owner reads every material here (the others are open); anonymous the open ones
        assert len(ids) == db.materials.count_documents({} if who == "owner" else {"tier": "open"})
        assert all(r["structure"]["sites"] for r in rows)
    # an owner's page token in an anonymous request resumes under the anonymous filter
    first = httpx.get(world["url"] + "/v1/materials", headers=headers(world, "owner"),
                      params={"page_size": 2}).json()
    token = first["meta"]["next_page_token"]
    rest = httpx.get(world["url"] + "/v1/materials", params={"page_size": 1000,
                                                             "page_token": token}).json()
    assert rest["data"] and all(r["tier"] == "open" for r in rest["data"])
