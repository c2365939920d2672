"""A campaign through PJM onto an emulated aarch64 compute node, offline, then synced.

The node (``scripts/aarch64_node.sh``: Debian 12 arm64 Python and MPICH, aarch64 wheels,
run by qemu-aarch64-static) stands for Fugaku's A64FX nodes behind x86-64 login nodes: the
job must run matdx with the profile's node Python, nothing of this host's environment.
Skipped when the node has not been built, unless ``MATDX_REQUIRE_AARCH64=1`` (CI).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pymongo
import pytest
import yaml

from matdx.execution.offline import sync
from matdx.execution.submit import submit
from matdx.schedulers import FINAL_STATES, JobState, scheduler_for
from matdx.sites import load_profile
from matdx.workflows import fireworks_adapter
from matdx.workflows.campaign import load_campaign
from matdx.workflows.context import open_store
from matdx.workflows.runner import submit_campaign

ROOT = Path(__file__).resolve().parents[1]
STANDIN = ROOT / "tests" / "pjm_standin"
NODE = Path(os.environ.get("MATDX_AARCH64_NODE", Path.home() / ".cache/matdx/aarch64-node"))
pytestmark = pytest.mark.ferretdb

if not (NODE / "stamp").exists():
    if os.environ.get("MATDX_REQUIRE_AARCH64") == "1":
        raise RuntimeError(f"no aarch64 node at {NODE}: run scripts/aarch64_node.sh")
    pytest.skip("no emulated aarch64 node (scripts/aarch64_node.sh)", allow_module_level=True)


def node_profile(tmp_path: Path) -> Path:
    """The stand-in's profile with aarch64 compute nodes and their Python."""
    lib = tmp_path / "node-matdx"  # matdx of this tree, a pure-Python wheel, for the node
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                    str(tmp_path / "whl"), str(ROOT)], check=True)
    wheel = next((tmp_path / "whl").glob("matdx-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(lib), str(wheel)], check=True)
    launcher = tmp_path / "bin" / "mpiexec"  # the site's launcher (Hydra and its proxy)
    launcher.parent.mkdir()
    for program in ("mpiexec", "hydra_pmi_proxy"):
        (launcher.parent / program).symlink_to(Path(sys.executable).parent / program)
    data = yaml.safe_load((STANDIN / "profile.yaml").read_text())
    data.update(
        site="aarch64-node",
        compute_env={
            "arch": "aarch64",
            "python": str(NODE / "python"),
            "setup": [f'{NODE / "python"} -c "import platform; print(platform.machine())" '
                      "> node-arch.txt"],
        },
        env={"PYTHONPATH": str(lib)},
        farm_launcher={"command": f"{launcher} -n {{ranks}}"},
    )
    path = tmp_path / "aarch64.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


CAMPAIGN = """
name: arm-cu-au
description: Cu-Au on an emulated aarch64 node, EMT pre-screen.
seed: 3
chemical_space:
  elements: [Cu, Au]
  max_components: 2
  prototypes: [fcc, hcp, bcc, L1_2, L1_0, B2]
  max_atoms: 4
prescreen:
  engine: emt
  fmax: 0.05
  steps: 300
ranking:
  key: energy_above_hull
batch_size: 4
"""


def energies(db_uri: str) -> dict[str, tuple[float, str]]:
    """Energy per atom and architecture of each completed calculation, by material."""
    base, name = db_uri.rsplit("/", 1)
    client = pymongo.MongoClient(base + "/")
    try:
        return {
            c["material_id"]: (c["output"]["energy_per_atom"], c["provenance"]["machine"])
            for c in client[name].calculations.find({"status": "completed"})
        }
    finally:
        client.close()


def test_campaign_on_an_emulated_aarch64_node(db_uri, ferret_base, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{STANDIN}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PJM_STANDIN_STATE", str(tmp_path / "pjm"))
    monkeypatch.setenv("PJM_STANDIN_RSCGRPS", "test:1:3600")
    monkeypatch.setenv("MATDX_DATA_DIR", str(tmp_path / "data"))
    campaign = tmp_path / "arm.yaml"
    campaign.write_text(CAMPAIGN)
    profile_path = node_profile(tmp_path)
    report = submit(load_campaign(campaign), profile_path, {"elapse": "30m"}, offline=True,
                    db_uri=db_uri)
    script = report.script.read_text()
    # nothing of this host's Python environment; the node's Python runs the farm
    assert sys.prefix not in script and str(NODE / "python") in script
    (job_id,) = report.job_ids
    scheduler = scheduler_for(load_profile(profile_path))
    deadline = time.monotonic() + 1500
    while (state := scheduler.status([job_id])[job_id]) not in FINAL_STATES:
        assert time.monotonic() < deadline, "the aarch64 job did not end"
        time.sleep(3)
    out = "\n".join(p.read_text() for p in report.job_dir.glob("*.out"))
    assert state is JobState.COMPLETED, out
    assert (report.job_dir / "node-arch.txt").read_text() == "aarch64\n"
    store, backend = open_store(db_uri)
    lp = fireworks_adapter.get_launchpad(backend)
    result = sync(lp, store, "arm-cu-au", run_dir=tmp_path / "runs", db_uri=db_uri)
    assert len(result.recovered) == report.reserved > 1 and not result.lost
    on_node = energies(db_uri)
    assert result.ingested == len(on_node) > 4
    assert {machine for _, machine in on_node.values()} == {"aarch64"}

    # the same campaign computed on this (x86-64) host, in a database of its own
    host_uri = f"{ferret_base}t_{uuid.uuid4().hex[:12]}"
    try:
        submit_campaign(load_campaign(campaign), db_uri=host_uri)
        on_host = energies(host_uri)
    finally:
        client = pymongo.MongoClient(ferret_base)
        client.drop_database(host_uri.rsplit("/", 1)[1])
        client.close()
    assert on_host.keys() == on_node.keys()
    assert {machine for _, machine in on_host.values()} == {platform.machine()} != {"aarch64"}
    worst = max(abs(on_node[m][0] - on_host[m][0]) for m in on_node)
    assert worst < 1e-6, f"aarch64 and {platform.machine()} energies differ by {worst} eV/atom"
