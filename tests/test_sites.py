"""Site profiles, job requests and their resolution, and the `matdx profile` commands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from matdx.cli.profile import profile_app
from matdx.core.errors import InputError
from matdx.core.yamlio import parse_yaml
from matdx.sites import (
    JobRequest,
    format_hms,
    format_slurm_time,
    load_profile,
    parse_duration,
    parse_job_request,
    resolve_job,
    sanitize_job_name,
)
from matdx.sites.quoting import JOB_NAME_PATTERN

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ROOT / "hpc_profiles"


@pytest.fixture(scope="module")
def fugaku():
    return load_profile(PROFILES / "fugaku.yaml")


@pytest.fixture(scope="module")
def x86():
    return load_profile(PROFILES / "x86_slurm.yaml")


# -- shipped profiles ---------------------------------------------------------------------


def test_fugaku_profile(fugaku):
    assert (fugaku.site, fugaku.scheduler) == ("fugaku", "pjm")
    n = fugaku.node
    assert (n.cores_per_node, n.numa_domains, n.numa_name, n.cores_per_domain) == (48, 4, "CMG", 12)
    assert n.memory_gib == 32
    assert (fugaku.default_layout.ranks_per_node, fugaku.default_layout.threads_per_rank) == (4, 12)
    rg = fugaku.resource_groups
    assert set(rg) == {"small", "large", "small-free", "large-free"}
    assert (rg["small"].max_nodes, rg["small"].max_elapse) == (384, 72 * 3600)
    assert (rg["large"].max_nodes, rg["large"].max_elapse) == (55296, 24 * 3600)
    assert (rg["small-free"].max_nodes, rg["small-free"].max_elapse) == (384, 12 * 3600)
    assert (rg["large-free"].max_nodes, rg["large-free"].max_elapse) == (55296, 12 * 3600)
    assert fugaku.group_required is True
    assert fugaku.pjm.llio.gfscache == "/vol0004"
    assert fugaku.pjm.llio.sharedtmp_size == "10Gi"
    assert ". /vol0004/apps/oss/spack/share/spack/setup-env.sh" in fugaku.setup
    assert "spack load quantum-espresso@7.2 %fj@4.10.0 arch=linux-rhel8-a64fx" in fugaku.setup
    assert fugaku.launcher.command == (
        "mpiexec -stdout-proc ./output.%j/%m/%/1000r/stdout"
        " -stderr-proc ./output.%j/%m/%/1000r/stderr"
    )


def test_x86_local_and_ci_profiles(x86):
    assert (x86.scheduler, x86.node.cores_per_node, x86.node.numa_domains) == ("slurm", 64, 2)
    assert x86.node.memory_gib == 256
    assert {"normal", "long", "debug"} <= set(x86.resource_groups)
    assert x86.launcher.command.startswith("srun")
    assert any(line.startswith("module load") for line in x86.setup)
    local = load_profile(PROFILES / "local.yaml")
    assert (local.scheduler, local.node.cores_per_node) == ("local", 2)
    assert local.launcher.command.startswith("/usr/bin/mpirun --allow-run-as-root")
    ci = load_profile(PROFILES / "ci_slurm.yaml")
    assert (ci.scheduler, ci.node.cores_per_node, ci.node.hostnames) == ("slurm", 2, ["localhost"])
    assert list(ci.resource_groups) == ["debug"] and ci.rscgrp_default == "debug"
    assert ci.launcher.command == "srun"


# -- durations ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("24:00:00", 86400),
        ("72:00:00", 259200),
        ("00:30:00", 1800),
        ("1-12:00:00", 129600),
        ("72h", 259200),
        ("30m", 1800),
        ("1h30m", 5400),
        ("2d", 172800),
        ("90s", 90),
        ("3600", 3600),
        (3600, 3600),
        (259200, 259200),
    ],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "bad", [0, -5, "0", "-1h", "00:00:00", "abc", "10:00", "1:2:3:4", "", "h", True, 1.5, None]
)
def test_parse_duration_rejects(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_format_durations():
    assert format_hms(259200) == "72:00:00"
    assert format_hms(5400) == "01:30:00"
    assert format_slurm_time(3600) == "01:00:00"
    assert format_slurm_time(172800 + 90) == "2-00:01:30"


# -- bad profiles: one test per rule, the message names the field ---------------------------

BASE = """\
site: testsite
scheduler: pjm
node:
  cores_per_node: 48
  numa_domains: 4
  numa_name: CMG
  memory_gib: 32
default_layout:
  ranks_per_node: 4
  threads_per_rank: 12
resource_groups:
  small:
    max_nodes: 384
    max_elapse: 72h
default_rscgrp: small
group_required: true
pjm:
  llio:
    gfscache: /vol0004
setup:
  - module load qe
launcher:
  command: mpiexec
"""


def write_profile(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "site.yaml"
    p.write_text(text)
    return p


def test_base_profile_is_valid(tmp_path):
    p = load_profile(write_profile(tmp_path, BASE))
    assert p.site == "testsite" and p.rscgrp_default == "small"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "  threads_per_rank: 12",
            "  threads_per_rank: 24",
            "line 9, field default_layout: default_layout 4 ranks × 24 threads exceeds the 48",
        ),
        ("site: testsite", "site: testsite\nsitename: x", "line 2, field sitename: unknown field"),
        ("  numa_name: CMG", "  numa_name: CMG\n  sockets: 2", "field node.sockets: unknown field"),
        (
            "max_elapse: 72h",
            "max_elapse: 0",
            "field resource_groups.small.max_elapse: must be a positive",
        ),
        (
            "max_elapse: 72h",
            "max_elapse: -3600",
            "field resource_groups.small.max_elapse: must be a positive",
        ),
        (
            "max_elapse: 72h",
            "max_elapse: soon",
            "field resource_groups.small.max_elapse: expected HH:MM:SS",
        ),
        ("    max_nodes: 384", "    max_nodes: 0", "field resource_groups.small.max_nodes:"),
        (
            "default_rscgrp: small",
            "default_rscgrp: tiny",
            "line 15, field default_rscgrp: default_rscgrp 'tiny' is not",
        ),
        (
            "  small:",
            '  "sm all":',
            "field resource_groups: resource group name 'sm all' is not a plain word",
        ),
        (
            "  numa_domains: 4",
            "  numa_domains: 5",
            "field node: 48 cores cannot be split evenly into 5 CMG",
        ),
        ("scheduler: pjm", "scheduler: pbs", "line 2, field scheduler:"),
        (
            "  - module load qe",
            '  - "module load qe\\nrm -rf /"',
            "field setup: line 1 must be a single line",
        ),
        (
            "  command: mpiexec",
            "  command: mpiexec -n {procs}",
            "field launcher.command: unknown placeholder {procs}",
        ),
        (
            "  command: mpiexec",
            '  command: "mpiexec\\nrm -rf ~"',
            "field launcher.command: must be a single line",
        ),
        ("    gfscache: /vol0004", '    gfscache: "/vol0004;rm"', "field pjm.llio.gfscache:"),
        (
            "    gfscache: /vol0004",
            "    gfscache: /vol0004\n    sharedtmp_size: 10GB",
            "field pjm.llio.sharedtmp_size:",
        ),
        (
            "scheduler: pjm",
            "scheduler: slurm",
            "line 18, field pjm: the pjm section is not for slurm",
        ),
        (
            "launcher:",
            "commands:\n  qsub: /usr/bin/qsub\nlauncher:",
            "field commands: unknown program 'qsub' for pjm",
        ),
        (
            "launcher:",
            "env:\n  BAD-NAME: x\nlauncher:",
            "field env: 'BAD-NAME' is not a valid environment variable",
        ),
        (
            "group_required: true",
            "group_required: true\ndefault_group: 'hp;rm'",
            "field default_group:",
        ),
    ],
)
def test_bad_profiles(tmp_path, old, new, expected):
    assert old in BASE
    path = write_profile(tmp_path, BASE.replace(old, new, 1))
    with pytest.raises(InputError) as info:
        load_profile(path)
    msg = str(info.value)
    assert msg.startswith("profile site.yaml")
    assert expected in msg
    assert "\n" not in msg


def test_missing_and_malformed_profile(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_profile(tmp_path / "nope.yaml")
    with pytest.raises(InputError, match="malformed YAML"):
        load_profile(write_profile(tmp_path, "site: [x"))


# -- job requests resolved against a profile ------------------------------------------------


def test_resolve_defaults(fugaku):
    job = resolve_job(fugaku, JobRequest(nodes=4, group="hp120000"))
    assert (job.rscgrp, job.elapse, job.ranks_per_node, job.threads_per_rank) == (
        "small",
        3600,
        4,
        12,
    )
    assert (job.total_ranks, job.cores_used_per_node, job.elapse_hms) == (16, 48, "01:00:00")
    assert [p.domains for p in job.placement()] == [(0,), (1,), (2,), (3,)]
    assert [(p.first_core, p.last_core) for p in job.placement()] == [
        (0, 11),
        (12, 23),
        (24, 35),
        (36, 47),
    ]


def test_placement_across_and_within_cmgs(fugaku):
    two = resolve_job(fugaku, JobRequest(group="g", ranks_per_node=2, threads_per_rank=24))
    assert [p.domains for p in two.placement()] == [(0, 1), (2, 3)]
    eight = resolve_job(fugaku, JobRequest(group="g", ranks_per_node=8, threads_per_rank=6))
    assert [p.domains[0] for p in eight.placement()] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert (eight.placement()[1].first_core, eight.placement()[1].last_core) == (6, 11)


def test_resolve_large_and_elapse_formats(fugaku):
    job = resolve_job(
        fugaku, JobRequest(nodes=1000, rscgrp="large", elapse="24:00:00", group="hp1")
    )
    assert (job.nodes, job.elapse, job.group) == (1000, 86400, "hp1")
    assert resolve_job(fugaku, JobRequest(group="g", elapse="72h")).elapse == 259200
    assert resolve_job(fugaku, JobRequest(group="g", elapse=1800)).elapse == 1800


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"ranks_per_node": 8, "threads_per_rank": 12},
            "field ranks_per_node: 8 ranks × 12 threads = 96 cores exceeds the 48 cores per node",
        ),
        ({"threads_per_rank": 13}, "field threads_per_rank: 4 ranks × 13 threads = 52 cores"),
        (
            {"nodes": 385},
            "field nodes: 385 nodes exceeds the limit of resource group 'small' (384)",
        ),
        (
            {"nodes": 60000, "rscgrp": "large"},
            "field nodes: 60000 nodes exceeds the limit of resource group 'large' (55296)",
        ),
        ({"nodes": 4, "rscgrp": "large"}, "field nodes: 4 nodes is below the minimum"),
        (
            {"elapse": "73h"},
            "field elapse: 73:00:00 exceeds the limit of resource group 'small' (72:00:00)",
        ),
        (
            {"elapse": "13h", "rscgrp": "small-free"},
            "field elapse: 13:00:00 exceeds the limit of resource group 'small-free' (12:00:00)",
        ),
        ({"group": None}, "field group: site fugaku requires a group"),
        ({"rscgrp": "tiny"}, "field rscgrp: unknown resource group 'tiny' on site fugaku"),
        ({"llio_sharedtmp_size": "10Gi", "array": "0-3", "after": "12"}, "field after:"),
    ],
)
def test_resolve_rejects(fugaku, fields, expected):
    data = {"group": "hp120000", **fields}
    data = {k: v for k, v in data.items() if v is not None}
    with pytest.raises(InputError) as info:
        resolve_job(fugaku, parse_job_request(data))
    assert expected in str(info.value)
    assert str(info.value).startswith("job, field ")
    assert "\n" not in str(info.value)


def test_llio_only_on_pjm(x86):
    with pytest.raises(InputError, match="field llio_sharedtmp_size: site x86-cluster"):
        resolve_job(x86, JobRequest(group="p", llio_sharedtmp_size="10Gi"))


def test_slurm_account_required(x86):
    with pytest.raises(InputError, match="field group: site x86-cluster requires an account"):
        resolve_job(x86, JobRequest())


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"nodes": 1, "walltime": "1h"}, "field walltime: unknown field"),
        ({"elapse": 0}, "field elapse: must be a positive duration"),
        ({"elapse": -60}, "field elapse: must be a positive duration"),
        ({"elapse": "00:00:00"}, "field elapse: must be a positive duration"),
        ({"elapse": "-2h"}, "field elapse: must be a positive duration"),
        ({"nodes": 0}, "field nodes: Input should be greater than or equal to 1"),
        ({"job_name": "x; rm -rf ~"}, "field job_name:"),
        ({"job_name": "$(id)"}, "field job_name:"),
        ({"stdout": "out`id`.txt"}, "field stdout:"),
        ({"stderr": "a b.err"}, "field stderr:"),
        ({"rscgrp": 'small"\n#PJM -L "node=9'}, "field rscgrp:"),
        ({"group": "hp;id"}, "field group:"),
        ({"array": "9-0"}, "field array: range 9-0 runs backwards"),
        ({"array": "0-9;id"}, "field array:"),
        ({"after": "123 456"}, "field after:"),
        ({"env": {"A B": "x"}}, "field env: 'A B' is not a valid environment variable name"),
        ({"command": ["pw.x", "a\x00b"]}, "field command: must not contain a NUL"),
        ({"workdir": "/tmp/a\x00b"}, "field workdir: must not contain a NUL"),
    ],
)
def test_bad_job_requests(data, expected):
    with pytest.raises(InputError) as info:
        parse_job_request(data)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_job_file_errors_give_lines(fugaku):
    data, lines = parse_yaml("job_name: qe\nnodes: 500\ngroup: hp1\n")
    request = parse_job_request(data, what="job file qe.yaml", lines=lines)
    with pytest.raises(InputError, match=r"^job file qe.yaml line 2, field nodes: 500 nodes"):
        resolve_job(fugaku, request, what="job file qe.yaml", lines=lines)


@given(st.text(max_size=200))
def test_sanitized_job_names_are_always_safe(text):
    name = sanitize_job_name(text)
    assert re.match(JOB_NAME_PATTERN, name)
    JobRequest(job_name=name)  # accepted by validation too


# -- matdx profile check / show ------------------------------------------------------------

runner = CliRunner()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("fugaku", "ok: fugaku (pjm)"),
        ("x86_slurm", "ok: x86-cluster (slurm)"),
        ("local", "ok: local (local)"),
        ("ci_slurm", "ok: ci-slurm (slurm)"),
    ],
)
def test_cli_check_ok(name, expected):
    result = runner.invoke(profile_app, ["check", str(PROFILES / f"{name}.yaml")])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == expected


def test_cli_check_bad(tmp_path):
    path = write_profile(tmp_path, BASE.replace("max_elapse: 72h", "max_elapse: -1"))
    result = runner.invoke(profile_app, ["check", str(path)])
    assert isinstance(result.exception, InputError)
    assert "field resource_groups.small.max_elapse: must be a positive" in str(result.exception)


def test_cli_show_fugaku():
    result = runner.invoke(
        profile_app,
        [
            "show",
            str(PROFILES / "fugaku.yaml"),
            "--nodes",
            "4",
            "--elapse",
            "24h",
            "-g",
            "hp120000",
            "--command",
            "pw.x -nk 4 -in scf.in",
        ],
    )
    assert result.exit_code == 0, result.output
    out = result.output.splitlines()
    assert "nodes: 4" in out
    assert "total ranks: 16 (4 per node)" in out
    assert "threads per rank: 12" in out
    assert "cores per node: 48 used of 48 (4 CMG x 12 cores, 32 GiB)" in out
    assert "  rank 3: cores 36-47 (CMG 3)" in out
    assert '#PJM --mpi "proc=16"' in out
    assert '#PJM -L "elapse=24:00:00"' in out
    assert "export OMP_NUM_THREADS=12" in out
    assert out[-1] == (
        "mpiexec -stdout-proc ./output.%j/%m/%/1000r/stdout"
        " -stderr-proc ./output.%j/%m/%/1000r/stderr pw.x -nk 4 -in scf.in"
    )


def test_cli_show_slurm_layout():
    result = runner.invoke(
        profile_app,
        [
            "show",
            str(PROFILES / "x86_slurm.yaml"),
            "--nodes",
            "2",
            "--ranks-per-node",
            "2",
            "--threads",
            "32",
            "--rscgrp",
            "long",
            "--elapse",
            "96:00:00",
            "--account",
            "proj",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "  rank 1: cores 32-63 (socket 1)" in result.output.splitlines()
    assert "#SBATCH --time=4-00:00:00" in result.output
    assert "#SBATCH --partition=long" in result.output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--nodes", "400", "--account", "g"], "job options, field nodes: 400 nodes exceeds"),
        (["--threads", "24", "--account", "g"], "job options, field threads_per_rank: 4 ranks × 24"),
        (["--elapse", "0", "--account", "g"], "job options, field elapse: must be a positive"),
        (["--rscgrp", "huge", "--account", "g"], "field rscgrp: unknown resource group 'huge'"),
        ([], "field group: site fugaku requires a group"),
        (["--account", "g", "--command", "pw.x 'unbalanced"], "--command cannot be split"),
    ],
)
def test_cli_show_errors(args, expected):
    result = runner.invoke(profile_app, ["show", str(PROFILES / "fugaku.yaml"), *args])
    assert isinstance(result.exception, InputError), result.output
    assert expected in str(result.exception)
    assert "\n" not in str(result.exception)


def test_cli_errors_through_main(monkeypatch, capsys, tmp_path):
    """Wired as `matdx profile`, errors come out as one line and exit code 2."""
    import matdx.cli.main as cli_main

    test_app = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
    test_app.add_typer(profile_app, name="profile")
    monkeypatch.setattr(cli_main, "app", test_app)

    assert cli_main.main(["profile", "check", str(PROFILES / "fugaku.yaml")]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "ok: fugaku (pjm)"

    bad = write_profile(tmp_path, BASE.replace("  threads_per_rank: 12", "  threads_per_rank: 99"))
    assert cli_main.main(["profile", "check", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: profile site.yaml line 9, field default_layout:")
    assert len(err.splitlines()) == 1

    code = cli_main.main(["profile", "show", str(PROFILES / "fugaku.yaml"), "--nodes", "9999"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "field group: site fugaku requires a group" in err
