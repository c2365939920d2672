"""Task slots: resources checked against the site's nodes, disjoint cores, launch prefixes.

The runs start real pw.x and lmp processes through the slot scheduler on this machine's two
cores (locally and as Slurm job steps) and read where each ran from ``/proc/<pid>/status``
(tests/slot_tasks.py): no two tasks running at once share a core, at most two 1-rank tasks
run at once, and a 2-rank task runs alone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from matdx.core.errors import InputError
from matdx.engines.base import TaskLaunch, task_launch
from matdx.engines.qe.core import default_profile as qe_profile
from matdx.sites.models import load_profile
from matdx.sites.slots import (
    SERIAL,
    CorePool,
    SlotRequest,
    launch_prefix,
    plan_job,
    resolve_request,
    vcoord_text,
)

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ROOT / "hpc_profiles"
SCRIPT = ROOT / "tests" / "slot_tasks.py"


def profile(name):
    return load_profile(PROFILES / f"{name}.yaml")


# --- requests and plans -----------------------------------------------------------------


def test_fugaku_default_is_one_node_four_ranks_one_per_cmg():
    fugaku = profile("fugaku")
    request = resolve_request(fugaku, None)
    assert (request.nodes, request.ranks_per_node, request.threads) == (1, 4, 12)
    slots = plan_job(fugaku, 3, request)
    assert [s.nodes for s in slots] == [(0,), (1,), (2,)]
    # Fujitsu MPI places concurrent mpiexec by node: one task per node, even a small one
    small = plan_job(fugaku, 2, resolve_request(fugaku, {"ranks_per_node": 1, "threads": 12}))
    assert len(small) == 2
    two_nodes = plan_job(fugaku, 4, resolve_request(fugaku, {"nodes": 2, "ranks": 8}))
    assert [s.nodes for s in two_nodes] == [(0, 1), (2, 3)]
    assert vcoord_text(two_nodes[1]) == "(2)\n" * 4 + "(3)\n" * 4
    # Fujitsu MPI runs at most 128 background mpiexec: a 384-node job, 128 1-node tasks
    assert len(plan_job(fugaku, 384, request)) == 128
    assert len(plan_job(fugaku, 384, resolve_request(fugaku, {"nodes": 3, "ranks": 12}))) == 128


def test_core_slots_are_disjoint_and_ranks_stay_in_a_numa_domain():
    x86 = profile("x86_slurm")  # 64 cores in 2 sockets of 32
    request = resolve_request(x86, {"ranks_per_node": 4, "threads": 8})
    slots = plan_job(x86, 1, request)
    assert len(slots) == 2
    cores = [set(s.cores) for s in slots]
    assert not cores[0] & cores[1] and len(cores[0] | cores[1]) == 64
    for s in slots:  # each rank's 8 threads in one socket
        for r in range(4):
            block = s.cores[8 * r: 8 * r + 8]
            assert len({c // 32 for c in block}) == 1
    pool = CorePool(1, x86.node)
    assert pool.take(SlotRequest(1, 60, 1)) is not None
    assert pool.take(SlotRequest(1, 8, 1)) is None and pool.used(0) == 60
    assert pool.take(SERIAL, first_node_only=True) is not None and pool.used(0) == 61


@pytest.mark.parametrize(
    ("name", "resources", "message"),
    [
        ("fugaku", {"ranks_per_node": 8, "threads": 12}, "need 96 cores; a node has 48"),
        ("fugaku", {"ranks_per_node": 9, "threads": 5}, "straddling two .at most 8 per node"),
        ("ci_slurm", {"ranks": 3}, "need 3 cores; a node has 2"),
    ],
)
def test_a_task_larger_than_a_node_is_refused_in_one_line(name, resources, message):
    with pytest.raises(InputError, match=message) as err:
        resolve_request(profile(name), resources, what="step dft")
    assert str(err.value).startswith("step dft:") and "\n" not in str(err.value)


def test_launch_prefixes_of_each_scheduler():
    ci = profile("ci_slurm")
    slot = CorePool(1, ci.node).take(SlotRequest(1, 1, 1))
    assert launch_prefix(ci, slot, ["localhost"]) == (
        "srun", "--exact", "-N", "1", "-n", "1", "-c", "1", "-w", "localhost", "--mpi=pmix",
        "taskset", "-c", "0")
    x86 = profile("x86_slurm")
    two = plan_job(x86, 4, resolve_request(x86, {"nodes": 2, "ranks_per_node": 16,
                                                  "threads": 4}))[1]
    assert launch_prefix(x86, two, ["n1", "n2", "n3", "n4"]) == (
        "srun", "--exact", "-N", "2", "-n", "32", "-c", "4", "--cpu-bind=cores", "-w", "n3,n4")
    fugaku = profile("fugaku")
    one = plan_job(fugaku, 2, resolve_request(fugaku, None))[1]
    words = launch_prefix(fugaku, one, vcoordfile="slots/vcoord.7")
    assert words[:5] == ("mpiexec", "--vcoordfile", "slots/vcoord.7", "-n", "4")
    assert "-stdout-proc" in words and "-stderr-proc" in words


def test_an_engine_in_a_slot_gets_the_slots_prefix_not_the_global_command(monkeypatch):
    monkeypatch.setenv("MATDX_QE_COMMAND", "srun --overlap -N 1 -n 64 pw.x")
    assert qe_profile().command[:3] == ("srun", "--overlap", "-N")
    with task_launch(TaskLaunch(("mpirun", "-np", "1", "taskset", "-c", "1"),
                                {"OMP_NUM_THREADS": "1"})):
        assert qe_profile().command == ("mpirun", "-np", "1", "taskset", "-c", "1", "pw.x")
    assert qe_profile().command[0] == "srun"


# --- real runs ---------------------------------------------------------------------------


def intervals(data):
    """(task, cpus, first, last) of each sampled process."""
    return [(r["task"], r["cpus"], r["first"], r["last"]) for r in data["seen"].values()]


def cpuset(text):
    out = set()
    for part in text.split(","):
        a, _, b = part.partition("-")
        out |= set(range(int(a), int(b or a) + 1))
    return out


def check_no_oversubscription(data, tasks):
    assert len(data["states"]) == len(tasks)
    energies = {tasks[int(i)].split(":")[0]: set() for i in data["states"]}
    for i, e in data["states"].items():
        energies[tasks[int(i)].split(":")[0]].add(e)
    assert all(len(v) == 1 for v in energies.values()), energies  # same result on any slot
    procs = intervals(data)
    assert {t.rsplit("-", 1)[1] for t, *_ in procs} == {str(i) for i in range(len(tasks))}
    for task, cpus, first, last in procs:
        ranks = int(tasks[int(task.rsplit("-", 1)[1])].split(":")[1])
        assert len(cpuset(cpus)) == ranks  # pinned to its slot's cores only
        for other, ocpus, ofirst, olast in procs:
            if other != task and first <= olast and ofirst <= last:  # ran at the same time
                assert not cpuset(cpus) & cpuset(ocpus), (task, cpus, other, ocpus)
    # at most two cores in use at any moment (sum over running tasks)
    moments = sorted({p[2] for p in procs})
    for t in moments:
        running = {task: cpus for task, cpus, first, last in procs if first <= t <= last}
        assert sum(len(cpuset(c)) for c in running.values()) <= 2


TASKS = ["qe:1", "qe:1", "qe:2", "qe:1", "qe:1", "lammps:1", "lammps:2", "lammps:1"]
LOCAL_TASKS = ["qe:1", "qe:2", "qe:1", "lammps:1", "lammps:1"]


@pytest.fixture(scope="module")
def programs():
    for program in ("pw.x", "lmp"):
        if shutil.which(program) is None:
            pytest.fail(f"{program} is needed (Debian: quantum-espresso, lammps)")


def test_local_slots_never_share_a_core(programs, tmp_path):
    out = tmp_path / "local.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(SCRIPT), str(PROFILES / "local.yaml"), str(out),
                    *LOCAL_TASKS], check=True, env=env, timeout=600)
    data = json.loads(out.read_text())
    check_no_oversubscription(data, LOCAL_TASKS)
    assert data["starts"]["1"]["prefix"][-5:] == ["-np", "2", "taskset", "-c", "0,1"]


@pytest.mark.slurm
def test_slurm_job_steps_never_share_a_core(programs, tmp_path):
    if shutil.which("sbatch") is None or not os.environ.get("SLURM_CONF"):
        pytest.fail("the Slurm test cluster is needed (source .ci/slurm.env)")
    out = tmp_path / "slurm.json"
    script = tmp_path / "job.sh"
    script.write_text(
        "#!/bin/bash\n"
        f"export PYTHONPATH={ROOT / 'src'} OMP_NUM_THREADS=1\n"
        f"exec {sys.executable} {SCRIPT} {PROFILES / 'ci_slurm.yaml'} {out} {' '.join(TASKS)}\n"
    )
    subprocess.run(["sbatch", "-W", "-n", "2", "-t", "10", "-o", str(tmp_path / "job.out"),
                    str(script)], check=True, timeout=900, cwd=tmp_path)
    assert out.exists(), (tmp_path / "job.out").read_text()
    data = json.loads(out.read_text())
    check_no_oversubscription(data, TASKS)
    # each task was a job step of its own, never more than two at once
    assert max(data["steps"]) <= 2 and max(data["steps"]) >= 1
    assert data["starts"]["0"]["prefix"][:2] == ["srun", "--exact"]


# --- a campaign through the slot farm in a Slurm job ---------------------------------------

SLOT_CAMPAIGN = """\
name: {name}
chemical_space:
  elements: [Al]
  max_components: 1
  prototypes: [fcc, bcc]
  orderings: null
batch_size: 10
steps:
  - name: dft
    engine: qe
    task: static
    settings: {{protocol: fast, ecutwfc: 15, ecutrho: 120, kspacing: 0.6}}
    resources: {{ranks: 1}}
  - name: md
    engine: lammps
    task: {md_task}
    input: dft
    select: {{top: 1, references: false}}
    settings: {md_settings}
    resources: {{ranks: {md_ranks}}}
"""
SLURM_MD = {
    "md_task": "md",
    "md_settings": "{steps: 500, supercell: [2, 2, 2], dump_interval: 0}",
    "md_ranks": 2,
}
"""The Slurm farm's LAMMPS step: NPT MD on two ranks."""


def run_slot_job(tmp_path, profile_path, name, md, db_uri, options, poll_s=2.0):
    """Submit the slot campaign with ``--slots``, wait for its job; ``(report, log, db)``."""
    import pymongo

    from matdx.execution.submit import submit
    from matdx.schedulers import scheduler_for
    from matdx.workflows.campaign import load_campaign

    path = tmp_path / "c.yaml"
    path.write_text(SLOT_CAMPAIGN.format(name=name, **md))
    report = submit(load_campaign(path), profile_path, options, db_uri=db_uri,
                    task_estimate_s=5, slots=True)
    scheduler = scheduler_for(load_profile(profile_path))
    deadline = time.monotonic() + 600
    while scheduler.status(report.job_ids)[report.job_ids[0]].name not in (
            "COMPLETED", "FAILED", "CANCELLED"):
        assert time.monotonic() < deadline
        time.sleep(poll_s)
    log = "\n".join(p.read_text() for p in report.job_dir.glob("*.out"))
    base, dbname = db_uri.rsplit("/", 1)
    return report, log, pymongo.MongoClient(base + "/")[dbname]


@pytest.mark.ferretdb
@pytest.mark.slurm
def test_campaign_with_qe_and_lammps_steps_through_the_slot_farm_under_slurm(
    programs, db_uri, tmp_path, monkeypatch
):
    monkeypatch.setenv("MATDX_DATA_DIR", str(tmp_path / "data"))
    name = f"slots-{os.getpid()}"
    report, log, db = run_slot_job(
        tmp_path, PROFILES / "ci_slurm.yaml", name, SLURM_MD, db_uri, {"elapse": "10m"}
    )
    assert report.packing.n_jobs == 1
    script = report.script.read_text()
    assert "--slots" in script and "mpiexec" not in script and db_uri not in script
    states = {d["state"] for d in db.fireworks.find({"spec._matdx.campaign": name})}
    assert states == {"COMPLETED"}, log
    steps = {}
    for c in db.calculations.find({"campaign": name}):
        assert c["status"] == "completed", (c.get("error"), c.get("settings"), log[-3000:])
        step = (c.get("settings") or {}).get("step", "prescreen")
        steps[step] = steps.get(step, 0) + 1
    assert steps["dft"] >= 2 and steps["md"] == 1, steps
    # pw.x and lmp ran as job steps of their own, on the cores of their slot
    runs = tmp_path / "data" / "runs" / name / "steps"
    outs = list(runs.glob("dft/*/pw.out"))
    assert len(outs) == steps["dft"]
    assert all(re.search(r"running on +1 processors", o.read_text()) for o in outs)
    assert "with 2 MPI tasks x 1 OpenMP threads" in next(runs.glob("md/*/log.lammps")).read_text()
    launches = [ln for ln in log.splitlines() if ln.startswith("matdx farm: Firework")]
    assert len(launches) == steps["dft"] + steps["md"], log
    assert sum("srun --exact -N 1 -n 2 -c 1 -w localhost" in ln for ln in launches) == 1
    assert json.loads(log.strip().splitlines()[-1])["fireworks"] == {"COMPLETED": len(
        [d for d in db.fireworks.find({"spec._matdx.campaign": name})])}


# an MD long enough (about 40 s on two idle cores) that no 20 s job can finish it
MD_SLOT_WALLTIME = """\
name: {name}
chemical_space: {{elements: [Cu], min_components: 1, max_components: 1, prototypes: [fcc]}}
steps:
  - name: md
    engine: lammps
    task: md
    select: {{top: 1}}
    resources: {{ranks: 2}}
    settings:
      potential: CuNi.eam.alloy
      ensemble: nvt
      temperature: 300
      timestep: 2.0
      equilibration: 1000
      steps: 30000
      supercell: [8, 8, 8]
      thermo_interval: 100
      dump_interval: 0
      checkpoint_interval: 2000
"""


@pytest.mark.ferretdb
@pytest.mark.slow
def test_slot_task_running_at_the_deadline_stops_and_resumes_in_the_next_job(
    programs, db_uri, tmp_path, monkeypatch
):
    import pymongo

    from matdx.workflows.campaign import load_campaign
    from matdx.workflows.runner import submit_campaign

    monkeypatch.setenv("MATDX_DATA_DIR", str(tmp_path / "data"))
    name = f"slots-md-{os.getpid()}"
    path = tmp_path / "md.yaml"
    path.write_text(MD_SLOT_WALLTIME.format(name=name))
    submit_campaign(load_campaign(path), launch=False, db_uri=db_uri)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1",
           "MATDX_DB_URI": db_uri, "MATDX_DATA_DIR": str(tmp_path / "data")}
    farm = [sys.executable, "-m", "matdx.cli.main", "farm", name, "--slots",
            str(PROFILES / "local.yaml"), "--task-estimate", "1", "--margin", "3"]
    base, dbname = db_uri.rsplit("/", 1)
    db = pymongo.MongoClient(base + "/")[dbname]
    md = {"campaign": name, "task": "md"}
    mddir = tmp_path / "data" / "runs" / name / "steps" / "md"
    # short jobs until one is cut while the MD runs (the pre-screen comes first)
    for _ in range(6):
        first = subprocess.run([*farm, "--walltime", "20"], env=env, capture_output=True,
                               text=True, timeout=300)
        assert first.returncode == 0, first.stderr[-2000:]
        assert json.loads(first.stdout.strip().splitlines()[-1])["elapsed_s"] < 20
        if mddir.is_dir():
            break
    (workdir,) = mddir.iterdir()
    assert json.loads((workdir / "parameters.json").read_text())["run"]["state"] == "stopped"
    assert db.calculations.count_documents(md) == 0  # stopped at the deadline: not stored

    second = subprocess.run(farm, env=env, capture_output=True, text=True, timeout=800)
    assert second.returncode == 0, second.stderr[-2000:]
    assert {d["state"] for d in db.fireworks.find({"spec._matdx.campaign": name})} == {
        "COMPLETED"}
    (calc,) = db.calculations.find(md)
    extra = calc["output"]["extra"]
    assert calc["status"] == "completed" and extra["resumed"] >= 1
    assert extra["segments"][0]["ended"] == "deadline" and calc["output"]["n_steps"] == 31000


# --- Fujitsu MPI: the ranks' output is in per-rank files ------------------------------------

STANDIN = ROOT / "tests" / "pjm_standin"
ENGINE_TASKS = ROOT / "tests" / "pjm_engine_tasks.py"


def test_rank_output_of_fujitsu_launches_follows_the_guide():
    from matdx.core.rank_output import per_rank_output
    from matdx.sites.slots import rank_output

    fugaku = profile("fugaku")
    slot = plan_job(fugaku, 2, resolve_request(fugaku, None))[1]
    prefix = launch_prefix(fugaku, slot, vcoordfile="v")
    # -stdout-proc ./output.%j/%m/%/1000r/stdout: <path>.<mpiexec count>.<rank>
    expected = ("./output.*/*/0/stdout.*.0", "./output.*/*/0/stderr.*.0")
    got = rank_output(fugaku, prefix)
    assert (got.stdout, got.stderr) == expected
    words = fugaku.launcher.command.split()
    assert (per_rank_output(words).stdout, per_rank_output(words).stderr) == expected
    # no options: ./output.<jobid>/<rank rounded down to 1000>/<count>/stdout.<count>.<rank>
    plain = rank_output(fugaku, ("mpiexec", "--vcoordfile", "v", "-n", "4"))
    assert plain.stdout == "./output.*/0/*/stdout.*.0"
    # -std-proc: both streams in one file; another launcher passes the output on
    both = per_rank_output(["mpiexec", "-std-proc", "log/%r/all", "pw.x"])
    assert both.stdout == both.stderr == "log/0/all.*.0"
    assert per_rank_output(["mpirun", "-np", "2", "pw.x"]) is None
    assert rank_output(profile("ci_slurm"), ("srun", "-n", "1")) is None
    assert qe_profile().output is None


def test_each_launch_collects_only_the_rank_files_it_wrote(tmp_path):
    """A resumed run meets the files of earlier launches, even under the same name (the
    ``mpiexec`` count restarts in each job): only what this launch wrote is collected."""
    from matdx.core.rank_output import RankOutput
    from matdx.engines.program import start_program

    writes = "mkdir -p o && printf '%s' \"$1\" > o/out.1.0"
    output = RankOutput("o/out.*.0", "o/err.*.0")
    for text in ("first run\n", "second\n"):
        proc = start_program(["sh", "-c", writes, "sh", text], tmp_path, "a.out", "a.err",
                             output=output)
        assert proc.wait() == 0
        assert (tmp_path / "a.out").read_text() == text
        assert (tmp_path / "a.err").read_text() == ""
    # a launch that wrote nothing (no file, as Fujitsu MPI leaves none) collects nothing
    assert start_program(["true"], tmp_path, "a.out", "a.err", output=output).wait() == 0
    assert (tmp_path / "a.out").read_text() == ""


def test_engines_read_the_programs_output_from_fujitsu_mpis_per_rank_files(programs, tmp_path):
    """pw.x and lmp in a PJM stand-in job with fugaku.yaml's launcher command before the
    program as the engine command: the stand-in's mpiexec writes each rank's output to its
    own files, and the energies equal those of the programs run directly."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1",
           "PATH": f"{STANDIN}{os.pathsep}{os.environ['PATH']}",
           "PJM_STANDIN_STATE": str(tmp_path / "state")}
    env.pop("PLE_MPI_STD_EMPTYFILE", None)
    subprocess.run([sys.executable, str(ENGINE_TASKS), "direct.json", "direct"], cwd=tmp_path,
                   env=env, check=True, timeout=300)
    (tmp_path / "job.sh").write_text(
        f"#!/bin/bash\n#PJM -L node=1\nexec {sys.executable} {ENGINE_TASKS} profile.json profile\n")
    sub = subprocess.run(["pjsub", "-X", "job.sh"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, check=True, timeout=30)
    jobid = re.search(r"Job (\d+) submitted", sub.stdout).group(1)
    deadline = time.monotonic() + 300
    while not re.search(rf"^{jobid} .* EXT ", subprocess.run(
            ["pjstat", "-H"], cwd=tmp_path, env=env, capture_output=True, text=True,
            check=True).stdout, re.M):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    err = (tmp_path / f"job.sh.{jobid}.err").read_text()
    direct = json.loads((tmp_path / "direct.json").read_text())
    banners = {"qe": "Program PWSCF", "lammps": "LAMMPS ("}
    assert (tmp_path / "profile.json").exists(), err[-3000:]
    runs = json.loads((tmp_path / "profile.json").read_text())
    for engine, run in runs.items():
        assert run["energy"] == pytest.approx(direct[engine]["energy"], abs=1e-6)
        assert banners[engine] in run["stdout"]
        # rank 0's standard output was in its own file; the empty stderr left none
        (rank_file,) = run["rank_files"]
        assert re.fullmatch(rf"output\.{jobid}/(\d+)/0/stdout\.\1\.0", rank_file)
    assert runs["qe"]["command"][:2] == ["mpiexec", "-stdout-proc"]


PJM_MD = {"md_task": "static", "md_settings": "{supercell: [2, 2, 2]}", "md_ranks": 1}
"""The PJM stand-in job's LAMMPS step: a static run on one rank."""


@pytest.mark.ferretdb
def test_campaign_through_the_slot_farm_in_a_pjm_job_stores_the_direct_energies(
    programs, db_uri, tmp_path, monkeypatch
):
    """``matdx submit --slots`` to the PJM stand-in: every pw.x and lmp starts with
    ``mpiexec --vcoordfile ... -stdout-proc ...``, whose ranks write only per-rank files."""
    from matdx.engines.lammps.parse import read_log
    from matdx.engines.qe.parse import read_output

    monkeypatch.setenv("PATH", f"{STANDIN}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PJM_STANDIN_STATE", str(tmp_path / "pjm-state"))
    monkeypatch.setenv("PJM_STANDIN_RSCGRPS", "test:1:3600")
    monkeypatch.setenv("MATDX_DATA_DIR", str(tmp_path / "data"))
    name = f"pjm-slots-{os.getpid()}"
    # the job finds the stand-in's mpiexec (and this tree's matdx) first
    job_env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT / "src")}
    _, log, db = run_slot_job(
        tmp_path, STANDIN / "profile.yaml", name, PJM_MD, db_uri,
        {"elapse": "10m", "env": job_env}, poll_s=1.0,
    )
    launches = [ln for ln in log.splitlines() if ln.startswith("matdx farm: Firework")]
    assert launches and all("mpiexec --vcoordfile" in ln and "-stdout-proc" in ln
                            for ln in launches), log
    calcs = {}
    for c in db.calculations.find({"campaign": name}):
        assert c["status"] == "completed", (c.get("error"), c.get("settings"), log[-3000:])
        calcs.setdefault((c.get("settings") or {}).get("step"), []).append(c)
    assert len(calcs.get("dft", [])) >= 2 and len(calcs.get("md", [])) == 1, log
    # the stored energies are those of pw.x and lmp run directly on the same input
    # the stored energies are those of pw.x and lmp run directly on the same inputs, and the
    # engines' output files hold the programs' output, collected from rank 0's own files
    direct = {"dft": (["pw.x", "-in", "pw.in"], "pw.out", "JOB DONE"),
              "md": (["lmp", "-in", "in.lammps", "-log", "direct.log"], "lammps.out", "Total wall")}
    for step, (command, stdout, last_words) in direct.items():
        for c in calcs[step]:
            workdir = Path(c["output"]["extra"]["workdir"])
            assert last_words in (workdir / stdout).read_text()
            assert len(list(workdir.glob("output.*/*/0/stdout.*.0"))) == 1
            again = tmp_path / "direct" / step / workdir.name
            shutil.copytree(workdir, again, ignore=shutil.ignore_patterns("output.*", "out"))
            with open(again / "direct.out", "wb") as fh:
                subprocess.run(command, cwd=again, stdout=fh, check=True, timeout=300,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
            if step == "dft":
                energy = read_output(again / "direct.out").energy
            else:
                energy = read_log(again / "direct.log").blocks[-1].table()[
                    "potential_energy_eV"][-1]
            assert c["output"]["energy"] == pytest.approx(energy, abs=1e-6)
