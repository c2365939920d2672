"""A stand-in for Fujitsu PJM (``pjsub``, ``pjstat``, ``pjdel``) that really runs jobs locally.

PJM, the job manager of Fujitsu's Technical Computing Suite (Fugaku), exists only on Fujitsu
machines. This module lets tests drive code that talks to PJM through its command-line
interface: jobs are accepted with Fugaku's messages, run detached on this machine under
Fugaku's environment variables and output-file names, have their elapsed-time limit enforced,
and are listed by ``pjstat`` in Fugaku's column layout. It uses the standard library only and
runs with any ``python3`` from 3.10 on (the three commands are ``#!/usr/bin/env python3``).

Every rule is taken from the public Fugaku user guide (RIKEN-RCCS/fugaku-doc, version 1.52;
see :data:`GUIDE`), and each names its page. Options the guide does not document are
refused, so that code tested against this stand-in uses only what Fugaku documents.

State
-----
Everything lives in ``$PJM_STANDIN_STATE`` (default ``/tmp/pjm-standin-<uid>``)::

    counter            last job id handed out (ids increase monotonically)
    .lock              fcntl lock taken around every read-modify-write
    jobs/<ID>.json     one record per job or sub-job, replaced atomically
                       (``12345.json``; bulk ``12345[3].json``; step ``12345_0.json``)
    spool/<JOBID>/     the job script as submitted (PJM, too, runs a copy)
    log/<ID>.log       the supervisor's own diagnostics

Every runnable unit (a normal job, a bulk sub-job, a step) has a detached supervisor process
(``python3 _pjm.py _supervise STATE ID``, own session) that moves it through
ACC -> QUE -> RNA -> RNP -> RUN -> RNE -> RNO -> EXT, runs the script in a new process group
with the submission directory as working directory, enforces the elapse limit and records
how it ended. Bulk and step jobs also have a parent record whose state ``pjstat`` derives
from the sub-jobs.

How a job ends (fields EC, PC, SN of ``pjstat -v``, and of the ``-S``/``-s`` stats file)
-----------------------------------------------------------------------------------------
- normal end: ST ``EXT``, PC (PJM code) 0, EC = the script's exit status, SN ``-``.
- elapse limit exceeded: like Fugaku, the job is forcibly ended and still shows ST ``EXT``;
  the cause is PJM code 11 ("job execution timeout due to violation of the elapsed time
  limit", from the Fugaku user guide's PJM code table) with REASON ``ELAPSE LIMIT EXCEEDED``
  (the REASON wording is an approximation). The whole process group gets SIGTERM, then SIGKILL
  after ``PJM_STANDIN_KILL_GRACE`` seconds (default 2); SN is the signal that ended the script
  and EC is 128 + SN.
- ``pjdel``: ST ``CCL``, PC 1 (same signalling); a step cancelled by its ``sd=`` dependency
  expression: ST ``CCL``, PC 6.
- the output file cannot be opened: ST ``ERR``, PC 16, REASON ``NO CURRENT DIR``. The
  supervisor vanished (machine restarted, killed): ``pjstat`` marks the unit ``ERR``,
  PC 27, REASON ``INTERNAL ERROR``.
Processes a job script leaves behind are killed when it ends, as PJM does.

Environment knobs
-----------------
``PJM_STANDIN_STATE`` state directory; ``PJM_STANDIN_RSCGRPS`` extra resource groups
``name:maxnodes:maxelapse_seconds,...``; ``PJM_STANDIN_KILL_GRACE`` seconds between SIGTERM and
SIGKILL; ``PJM_STANDIN_QUEUE_DELAY`` seconds a job stays QUE before it starts (default 0);
``PJM_STANDIN_FIRST_JOBID`` first id of a fresh state directory (default 10001);
``PJM_STANDIN_DEFAULT_PATH`` PATH of a job submitted without ``-X``.

See README.md beside this file for the formats and for what is faithful and what simplified.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import json
import math
import os
import pwd
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

Record = dict[str, Any]

HERE = os.path.dirname(os.path.realpath(__file__))

#: Built-in resource groups: name -> (max nodes, max elapse in seconds). Fugaku's public groups.
RSCGRPS: dict[str, tuple[int, int]] = {
    "small": (384, 72 * 3600),
    "large": (55296, 24 * 3600),
    "small-free": (384, 12 * 3600),
    "large-free": (55296, 12 * 3600),
}
DEFAULT_RSCGRP = "small"
#: Fewest nodes of a group (UsageRules: large starts at 385 nodes, error PJM 0054).
MIN_NODES = {"large": 385, "large-free": 385}
#: ``-L`` resources the guide documents: node, elapse, rscgrp (pjsubCommandOptions),
#: retention_state (NormalJob), exepjrsh (JobExecConsiderpoints); and jobenv (the job
#: environment, e.g. singularity for Singularity images: Fugaku's Singularity guide, not
#: the user guide; recorded only)
RSC_KEYS = ("node", "elapse", "rscgrp", "retention_state", "exepjrsh", "jobenv")
#: ``--mpi`` parameters (pjsubCommandOptions, MPI option)
MPI_KEYS = ("shape", "proc", "max-proc-per-node")

#: States after which nothing more happens.
FINAL_STATES = ("EXT", "CCL", "ERR", "RJT")
#: States of a unit whose script is (about to be) running.
RUNNING_STATES = ("RNA", "RNP", "RUN", "RNE", "RNO")

#: ``pjstat`` columns: (title, width); the last column is not padded.
PJSTAT_COLUMNS: list[tuple[str, int]] = [
    ("JOB_ID", 10),
    ("JOB_NAME", 10),
    ("MD", 2),
    ("ST", 3),
    ("USER", 8),
    ("START_DATE", 15),
    ("ELAPSE_LIM", 10),
    ("NODE_REQUIRE", 15),
    ("VNODE", 6),
    ("CORE", 4),
    ("V_MEM", 0),
]
#: ``pjstat -v`` columns.
PJSTAT_V_COLUMNS: list[tuple[str, int]] = [
    ("JOB_ID", 10),
    ("JOB_NAME", 10),
    ("MD", 2),
    ("ST", 3),
    ("USER", 8),
    ("GROUP", 8),
    ("START_DATE", 15),
    ("ELAPSE_TIM", 10),
    ("ELAPSE_LIM", 10),
    ("NODE_REQUIRE", 15),
    ("VNODE", 6),
    ("CORE", 4),
    ("V_MEM", 5),
    ("V_POL", 5),
    ("E_POL", 5),
    ("RANK", 5),
    ("LST", 3),
    ("EC", 3),
    ("PC", 3),
    ("SN", 3),
    ("PRI", 3),
    ("ACCEPT", 14),
    ("RSC_GRP", 10),
    ("REASON", 0),
]

PJSUB_USAGE = """\
usage: pjsub [-L "resource=value[,...]"] [--mpi "param[,...]"] [-g group] [-x VAR=VALUE[,...]]
             [-X] [-j] [-s|-S [--spath file]] [-N|--name name] [--comment text] [--llio ...]
             [--bulk --sparam START-END]
             [--step [--sparam "jid=JOBID|jnam=NAME[,sn=N][,sd=EXPR]"]]
             [--no-check-directory] [--no-check-gfscache] [script [args...]]
(stand-in for Fujitsu PJM, see tests/pjm_standin/README.md)
"""


class PJMError(Exception):
    """A user-facing PJM error: ``[ERR.] PJM <code> <command> <message>``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def render(self, command: str) -> str:
        """The message as PJM prints it."""
        return f"[ERR.] PJM {self.code:04d} {command} {self.message}"


# --------------------------------------------------------------------------------------------
# state directory
# --------------------------------------------------------------------------------------------


def state_dir() -> str:
    """The state directory, created if needed."""
    path = os.environ.get("PJM_STANDIN_STATE") or f"/tmp/pjm-standin-{os.getuid()}"
    for sub in ("jobs", "spool", "log"):
        os.makedirs(os.path.join(path, sub), exist_ok=True)
    return path


@contextlib.contextmanager
def locked(state: str) -> Iterator[None]:
    """Hold the state directory's exclusive lock."""
    fd = os.open(os.path.join(state, ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def record_path(state: str, uid: str) -> str:
    """Path of the JSON record of job or sub-job ``uid``."""
    return os.path.join(state, "jobs", f"{uid}.json")


def load(state: str, uid: str) -> Record | None:
    """Read one record (``None`` if there is none)."""
    try:
        with open(record_path(state, uid), encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None


def save(state: str, rec: Record) -> None:
    """Write one record atomically (callers hold the lock when they read-modify-write)."""
    _write_atomic(record_path(state, rec["id"]), json.dumps(rec, indent=1, sort_keys=True))


def update(sdir: str, uid: str, /, **changes: Any) -> Record:
    """Apply ``changes`` to record ``uid`` of state directory ``sdir`` under the lock."""
    with locked(sdir):
        rec = load(sdir, uid)
        if rec is None:
            raise KeyError(uid)
        if "state" in changes and changes["state"] != rec.get("state"):
            changes.setdefault("last_state", rec.get("state"))
        rec.update(changes)
        save(sdir, rec)
        return rec


def all_records(state: str) -> list[Record]:
    """Every record in the state directory."""
    out = []
    jobs = os.path.join(state, "jobs")
    for name in os.listdir(jobs):
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(jobs, name), encoding="utf-8") as fh:
                out.append(json.load(fh))
        except (OSError, ValueError):
            continue
    return out


def next_jobid(state: str) -> int:
    """Hand out the next job id (caller holds the lock)."""
    path = os.path.join(state, "counter")
    try:
        with open(path, encoding="utf-8") as fh:
            last = int(fh.read().strip())
    except (FileNotFoundError, ValueError):
        last = int(os.environ.get("PJM_STANDIN_FIRST_JOBID", "10001")) - 1
    _write_atomic(path, f"{last + 1}\n")
    return last + 1


# --------------------------------------------------------------------------------------------
# small formatting helpers
# --------------------------------------------------------------------------------------------


def parse_elapse(text: str) -> int:
    """``HH:MM:SS``, ``MM:SS`` or ``SS`` (hours may exceed 24) to seconds."""
    parts = text.strip().split(":")
    if not 1 <= len(parts) <= 3 or not all(p.strip().isdigit() for p in parts):
        raise PJMError(4, f'Invalid value of the option -L "elapse={text}".')
    secs = 0
    for p in parts:
        secs = secs * 60 + int(p)
    return secs


def fmt_hms(secs: int | None, hour_width: int = 2) -> str:
    """Seconds as ``HH:MM:SS`` (``hour_width`` digits of hours)."""
    if secs is None:
        return "-"
    secs = max(0, int(secs))
    return f"{secs // 3600:0{hour_width}d}:{secs % 3600 // 60:02d}:{secs % 60:02d}"


def fmt_date(ts: float | None, with_seconds: bool = True) -> str:
    """``MM/DD HH:MM:SS`` as pjstat prints dates."""
    if ts is None:
        return "-"
    return time.strftime("%m/%d %H:%M:%S" if with_seconds else "%m/%d %H:%M", time.localtime(ts))


def fmt_full_date(ts: float | None) -> str:
    """``YYYY/MM/DD HH:MM:SS`` as the statistics file prints dates."""
    if ts is None:
        return "-"
    return time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(ts))


def dash(value: Any) -> str:
    """``-`` for an absent value."""
    return "-" if value is None or value == "" else str(value)


def fmt_row(columns: list[tuple[str, int]], values: list[str]) -> str:
    """One fixed-width row (a value wider than its column pushes the rest right)."""
    cells = []
    for (_, width), value in zip(columns, values, strict=False):
        cells.append(value.ljust(width) if width else value)
    return " ".join(cells).rstrip()


def user_name(uid: int) -> str:
    """Login name of ``uid``."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def group_name(gid: int) -> str:
    """Group name of ``gid``."""
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def resource_groups() -> dict[str, tuple[int, int]]:
    """Built-in groups plus those of ``PJM_STANDIN_RSCGRPS`` (``name:maxnodes:maxsecs,...``)."""
    groups = dict(RSCGRPS)
    spec = os.environ.get("PJM_STANDIN_RSCGRPS", "")
    for item in filter(None, (s.strip() for s in spec.split(","))):
        try:
            name, nodes, secs = item.split(":")
            groups[name] = (int(nodes), int(secs))
        except ValueError:
            print(f"pjm-standin: ignoring bad PJM_STANDIN_RSCGRPS entry {item!r}", file=sys.stderr)
    return groups


# --------------------------------------------------------------------------------------------
# pjsub option parsing
# --------------------------------------------------------------------------------------------

GUIDE = "docs/user-guide/sys-use/user-guide-use-1.52/build/en/_sources"
"""Pages of the Fugaku user guide (github.com/RIKEN-RCCS/fugaku-doc) cited below."""

#: option -> (canonical name, takes an argument, the guide page that documents it).
#: Only documented options are accepted; anything else is refused as PJM refuses an
#: unknown option.
_OPTIONS: dict[str, tuple[str, bool, str]] = {
    "-L": ("rsc", True, "JobExecution/pjsubCommandOptions (Resource specification)"),
    "--rsc-list": ("rsc", True, "JobExecution/pjsubCommandOptions (MPI option: -L(--rsc-list))"),
    "--mpi": ("mpi", True, "JobExecution/pjsubCommandOptions (MPI option)"),
    "--gname": ("gname", True, "JobExecution/pjsubCommandOptions (Basic option)"),
    "--help": ("help", False, "JobExecution/pjsubCommandOptions (Basic option)"),
    "-j": ("merge", False, "JobExecution/pjsubCommandOptions (Basic option)"),
    "-m": ("mail", True, "JobExecution/pjsubCommandOptions (Basic option)"),
    "--mail-list": ("mail_list", True, "JobExecution/pjsubCommandOptions (Basic option)"),
    "--name": ("name", True, "JobExecution/pjsubCommandOptions (Basic option)"),
    "-N": ("name", True, "JobExecution/StepJob (the -N or --name option)"),
    "--restart": ("restart", False, "JobExecution/pjsubCommandOptions (Basic option)"),
    "-X": ("inherit_env", False, "JobExecution/pjsubCommandOptions (Basic option)"),
    "-x": ("env", True, "JobExecution/pjsubCommandOptions (environment variables)"),
    "-g": ("group", True, "JobExecution/SampleScripts (#PJM -g groupname)"),
    "-s": ("stats", False, "JobExecution/pjsubCommandOptions (Job statistical information)"),
    "-S": ("stats_nodes", False, "JobExecution/pjsubCommandOptions (Job statistical information)"),
    "--spath": ("spath", True, "JobExecution/pjsubCommandOptions (Job statistical information)"),
    "--comment": ("comment", True, "JobExecution/pjsubCommandOptions (PJM_COMMENT)"),
    "--at": ("at", True, "JobExecution/pjsubCommandOptions (execution start time)"),
    "--bulk": ("bulk", False, "JobExecution/BulkJob (ja)"),
    "--step": ("step", False, "JobExecution/StepJob"),
    "--sparam": ("sparam", True, "JobExecution/BulkJob (ja), JobExecution/StepJob"),
    "--llio": ("llio", True, "LayeredStorageAndLLIO/TheSecondLayerStrage"),
    "--no-check-directory": ("no_check_directory", False, "JobExecution/NormalJob"),
    "--no-check-gfscache": ("no_check_gfscache", False, "JobExecution/NormalJob"),
    "--interact": ("interact", False, "JobExecution/JobExecConsiderpoints"),
}
#: documented options this stand-in does not carry out (refused with a clear message)
_NOT_IMPLEMENTED = ("interact", "at", "restart", "mail", "mail_list")
_LIST_OPTIONS = ("rsc", "mpi", "env", "llio")


def parse_options(tokens: list[str], *, in_script: bool) -> tuple[dict[str, Any], list[str]]:
    """Parse pjsub options; return (options, remaining tokens = script and its arguments)."""
    opts: dict[str, Any] = {k: [] for k in _LIST_OPTIONS}
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("-") or tok == "-":
            break
        if tok == "--":
            i += 1
            break
        name, value = tok, None
        if tok.startswith("--") and "=" in tok:
            name, value = tok.split("=", 1)
        elif not tok.startswith("--") and len(tok) > 2 and tok[:2] in _OPTIONS:
            name, value = tok[:2], tok[2:]
        if name not in _OPTIONS:
            where = " in the job script" if in_script else ""
            raise PJMError(4, f"Invalid option{where}: {tok}.")  # not in the guide
        key, takes_arg, _ = _OPTIONS[name]
        if takes_arg and value is None:
            i += 1
            if i >= len(tokens):
                raise PJMError(4, f"Option {name} requires an argument.")
            value = tokens[i]
        if key in _LIST_OPTIONS:
            opts[key].append(value)
        else:
            opts[key] = value if takes_arg else True
        i += 1
    return opts, tokens[i:]


def script_directives(text: str) -> list[str]:
    """Tokens of the ``#PJM`` lines of the script's leading comment block."""
    tokens: list[str] = []
    for n, line in enumerate(text.splitlines()):
        stripped = line.strip()
        if n == 0 and stripped.startswith("#!"):
            continue
        if not stripped:
            continue
        if not stripped.startswith("#"):
            break  # the first command ends the directive block
        if stripped.startswith("#PJM") and (len(stripped) == 4 or stripped[4].isspace()):
            try:
                tokens += shlex.split(stripped[4:], comments=True)
            except ValueError as exc:
                raise PJMError(4, f"Invalid directive in the job script: {stripped} ({exc}).") from exc
    return tokens


def _keyvals(items: list[str], option: str) -> dict[str, str]:
    """``["node=1,elapse=1:00", "rscgrp=small"]`` to an ordered dict (later values win)."""
    out: dict[str, str] = {}
    for item in items:
        for part in filter(None, (p.strip() for p in item.split(","))):
            key, sep, val = part.partition("=")
            out[key.strip()] = val.strip() if sep else ""
    if "" in out:
        raise PJMError(4, f"Invalid value of the option {option}.")
    return out


def _env_vars(items: list[str]) -> dict[str, str]:
    """``-x`` values: ``VAR=VALUE[,VAR2=VALUE2]`` or ``VAR`` (value taken from pjsub's env)."""
    out: dict[str, str] = {}
    for item in items:
        for part in filter(None, item.split(",")):
            name, sep, val = part.partition("=")
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise PJMError(4, f"Invalid value of the option -x: {part}.")
            out[name] = val if sep else os.environ.get(name, "")
    return out


def merge_options(script_opts: dict[str, Any], cli_opts: dict[str, Any]) -> dict[str, Any]:
    """Script directives overridden by command-line options."""
    merged: dict[str, Any] = {}
    for key in set(script_opts) | set(cli_opts):
        if key in _LIST_OPTIONS:
            merged[key] = script_opts.get(key, []) + cli_opts.get(key, [])
        else:
            merged[key] = cli_opts.get(key, script_opts.get(key))
    return merged


def _parse_nodes(spec: str) -> tuple[int, str]:
    """``node=`` value to (node count, NODE_REQUIRE text)."""
    shape, _, mode = spec.partition(":")
    dims = shape.lower().split("x")
    if not all(d.isdigit() and int(d) > 0 for d in dims):
        raise PJMError(4, f'Invalid value of the option -L "node={spec}".')
    count = math.prod(int(d) for d in dims)
    if len(dims) > 1:
        return count, f"{count}:{shape}"
    return count, f"{count}:{mode}" if mode else str(count)


def build_request(opts: dict[str, Any]) -> Record:
    """Validate merged options against the resource groups; the job's resource request."""
    rsc = _keyvals(opts["rsc"], "-L")
    mpi = _keyvals(opts["mpi"], "--mpi")
    for given, known, option in ((rsc, RSC_KEYS, "-L"), (mpi, MPI_KEYS, "--mpi")):
        for key in given:
            if key not in known:
                raise PJMError(4, f'Invalid value of the option {option} "{key}".')
    groups = resource_groups()
    rscgrp = rsc.get("rscgrp", DEFAULT_RSCGRP)
    if rscgrp not in groups:
        raise PJMError(49, f"The specified resource group does not exist: rscgrp={rscgrp}.")
    max_nodes, max_elapse = groups[rscgrp]
    nodes, node_require = _parse_nodes(rsc.get("node", "1"))
    if nodes > max_nodes:
        raise PJMError(57, f"node={nodes} is greater than the upper limit ({max_nodes}).")
    if nodes < MIN_NODES.get(rscgrp, 1):
        raise PJMError(54, f"node={nodes} is less than the lower limit ({MIN_NODES[rscgrp]}).")
    elapse = max_elapse
    if "elapse" in rsc:
        # "[[hour:]minute:]second", or a range "min-max" / "min-" whose job may run to max
        # (simplified: the job runs to max; pjsubCommandOptions, Resource specification)
        low, dash_, high = rsc["elapse"].partition("-")
        elapse = parse_elapse(high) if high else max_elapse if dash_ else parse_elapse(low)
    if elapse <= 0:
        raise PJMError(4, f'Invalid value of the option -L "elapse={rsc["elapse"]}".')
    if elapse > max_elapse:
        # pjsubCommandOptions: "elapse=18000 is greater than the upper limit (14400)." (seconds)
        raise PJMError(57, f"elapse={elapse} is greater than the upper limit ({max_elapse}).")
    try:
        per_node = int(mpi["max-proc-per-node"]) if "max-proc-per-node" in mpi else None
        proc = int(mpi["proc"]) if "proc" in mpi else None
    except ValueError as exc:
        raise PJMError(4, "Invalid value of the option --mpi.") from exc
    if proc is not None and per_node is not None and proc > nodes * per_node:
        raise PJMError(
            57, f"proc={proc} is greater than the upper limit ({nodes * per_node})."
        )
    if proc is None:
        proc = nodes * (per_node or 1)
    if per_node is None:
        per_node = max(1, -(-proc // nodes))
    return {
        "rscgrp": rscgrp,
        "nodes": nodes,
        "node_require": node_require,
        "elapse": elapse,
        "mpi_proc": proc,
        "proc_per_node": per_node,
        "rsc": rsc,
        "mpi": mpi,
    }


#: ``--sparam`` keys of a step job (JobExecution/StepJob, "Step job option" and "Job
#: submission example with dependency")
STEP_KEYS = ("jid", "jnam", "sn", "sd")


def step_params(text: str | None) -> dict[str, str]:
    """``--sparam "jid=J[,sn=N][,sd=EXPR]"`` or ``"jnam=NAME[,...]"`` of a step job."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        key, sep, val = part.partition("=")
        if key not in STEP_KEYS or not sep or not val:
            raise PJMError(4, f'Invalid value of the option --sparam "{text}".')
        out[key] = val
    if "jid" in out and "jnam" in out:  # StepJob: jid and jnam together are an error
        raise PJMError(4, "The combination of the specified options is invalid (jid, jnam).")
    if "jid" in out and not out["jid"].isdigit():
        raise PJMError(4, f'Invalid value of the option --sparam "jid={out["jid"]}".')
    if "sn" in out and not (out["sn"].isdigit() and int(out["sn"]) <= 65535):
        raise PJMError(4, f'Invalid value of the option --sparam "sn={out["sn"]}".')
    return out


#: ``sd=form[:[deletetype][:stepno[:stepno...]]]`` (StepJob); ``form`` here is one
#: comparison of ``ec``, ``pc`` or ``sn`` with a number.
_SD_RE = re.compile(
    r"^(ec|pc|sn)(==|!=|<=|>=|<|>)(-?\d+)(?::(one|all)?(?::(\d+(?::\d+)*))?)?$"
)


def parse_step_dependency(expr: str | None) -> Record | None:
    """A dependency expression as a dict, ``None`` if absent.

    ``deletetype`` ``one`` deletes only this sub-job, ``all`` this one and every later one
    (default ``one``); the stepnos name the sub-jobs whose end is tested (default: the
    one submitted just before).
    """
    if not expr:
        return None
    m = _SD_RE.match(expr.replace(" ", ""))
    if not m:
        raise PJMError(4, f"Invalid step dependency expression: sd={expr}.")
    steps = [int(n) for n in m[5].split(":")] if m[5] else []
    return {"var": m[1], "op": m[2], "value": int(m[3]), "action": m[4] or "one",
            "steps": steps}


def find_step_job(state: str, sparam: dict[str, str]) -> Record | None:
    """The step job a sub-job joins: by ``jid`` (it must exist and not have ended, else
    ``[ERR.] PJM 0012 pjsub Job J does not exist.``, StepJob), or the latest one named
    ``jnam`` that has not ended (``None``: a new step job)."""
    def live(parent: Record) -> bool:
        subs = [load(state, s) for s in parent["subjobs"]]
        return any(u and u["state"] not in FINAL_STATES for u in subs)

    if "jid" in sparam:
        parent = load(state, sparam["jid"])
        if parent is None or parent.get("model") != "ST" or not live(parent):
            raise PJMError(12, f"Job {sparam['jid']} does not exist.")
        return parent
    if "jnam" in sparam:
        named = [r for r in all_records(state)
                 if r.get("model") == "ST" and r.get("role") == "parent"
                 and r["name"] == sparam["jnam"] and r.get("uid") == os.getuid() and live(r)]
        return max(named, key=lambda r: int(r["jobid"])) if named else None
    return None


# --------------------------------------------------------------------------------------------
# pjsub
# --------------------------------------------------------------------------------------------


def _spawn_supervisor(state: str, uid: str) -> None:
    """Start the detached supervisor of one unit (own session, no inherited stdio)."""
    log = open(os.path.join(state, "log", f"{uid}.log"), "ab")  # noqa: SIM115 (handed to child)
    try:
        subprocess.Popen(
            [sys.executable, os.path.join(HERE, "_pjm.py"), "_supervise", state, uid],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            close_fds=True,
            start_new_session=True,
            cwd="/",
        )
    finally:
        log.close()


def pjsub(argv: list[str]) -> int:
    """The ``pjsub`` command."""
    try:
        return _pjsub(argv)
    except PJMError as exc:
        print(exc.render("pjsub"), file=sys.stderr)
        return 1


def _pjsub(argv: list[str]) -> int:
    cli, rest = parse_options(argv, in_script=False)
    if cli.get("help"):
        print(PJSUB_USAGE, end="")
        return 0
    if rest:
        script_arg, args = rest[0], rest[1:]
        if not os.path.isfile(script_arg):
            raise PJMError(5, f"The job script does not exist: {script_arg}.")
        try:
            with open(script_arg, encoding="utf-8", errors="surrogateescape") as fh:
                text = fh.read()
        except OSError as exc:
            raise PJMError(5, f"The job script cannot be read: {script_arg}.") from exc
        default_name = os.path.basename(script_arg)
    else:
        text, args, default_name = sys.stdin.read(), [], "STDIN"
    script_opts, _ = parse_options(script_directives(text), in_script=True)
    opts = merge_options(script_opts, cli)
    for key in _NOT_IMPLEMENTED:
        if opts.get(key):
            option = next(o for o, (k, _, _) in _OPTIONS.items() if k == key)
            raise PJMError(4, f"{option} is documented but not carried out by this stand-in.")
    # BulkJob (ja): --bulk with --interact, --step or --mswk is an invalid combination
    if opts.get("bulk") and opts.get("step"):
        raise PJMError(4, "The combination of the specified options is invalid (--bulk, --step).")
    # pjsubCommandOptions: -s and -S exclude each other; --spath needs one of them
    if opts.get("stats") and opts.get("stats_nodes"):
        raise PJMError(4, "The combination of the specified options is invalid (-s, -S).")
    if opts.get("spath") and not (opts.get("stats") or opts.get("stats_nodes")):
        raise PJMError(4, "--spath needs -s or -S.")
    if opts.get("bulk") and not opts.get("sparam"):  # BulkJob (ja): --sparam is required
        raise PJMError(4, "--bulk needs --sparam.")
    if opts.get("sparam") and not (opts.get("bulk") or opts.get("step")):
        raise PJMError(4, "--sparam needs --bulk or --step.")
    req = build_request(opts)
    env_vars = _env_vars(opts["env"])
    name = opts.get("name") or default_name
    # pjsubCommandOptions (--name): up to 63 bytes, a letter first, then letters, digits,
    # "-", "_" and "."; the default (the script's file name) is not held to the first rule
    if len(name.encode()) > 63 or not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or (
        opts.get("name") and not name[0].isalpha()
    ):
        raise PJMError(4, f'Invalid value of the option --name "{name}".')
    sparam = step_params(opts.get("sparam")) if opts.get("step") else {}
    if "jnam" in sparam:  # StepJob: jnam names the sub-job whatever -N/--name say
        name = sparam["jnam"]

    bulk_range: list[int] = []
    if opts.get("bulk"):
        m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", opts.get("sparam") or "")
        if not m or int(m[1]) > int(m[2]) or int(m[2]) > 999999:
            raise PJMError(4, f'Invalid value of the option --sparam "{opts.get("sparam")}".')
        bulk_range = list(range(int(m[1]), int(m[2]) + 1))
    step_dep = parse_step_dependency(sparam.get("sd")) if opts.get("step") else None

    state = state_dir()
    cwd = os.getcwd()
    uid = os.getuid()
    base: Record = {
        "name": name,
        "uid": uid,
        "user": user_name(uid),
        "group": opts.get("group") or group_name(os.getgid()),
        "workdir": cwd,
        "args": args,
        "env": env_vars,
        "inherit_env": bool(opts.get("inherit_env")),
        "submit_env": dict(os.environ) if opts.get("inherit_env") else {},
        "merge": bool(opts.get("merge")),
        "stats": bool(opts.get("stats") or opts.get("stats_nodes")),
        "spath": opts.get("spath"),
        "comment": opts.get("comment"),
        "submit_path": os.environ.get("PATH", ""),
        "submit_lang": os.environ.get("LANG", ""),
        "llio": opts["llio"],
        "host": socket.gethostname(),
        "accept_time": time.time(),
        "state": "ACC",
        "last_state": None,
        "start_time": None,
        "end_time": None,
        "exit_code": None,
        "pjm_code": None,
        "signal": None,
        "reason": None,
        "cancel": False,
        **req,
    }

    units: list[str] = []
    with locked(state):
        parent = find_step_job(state, sparam) if opts.get("step") else None
        if parent is not None:
            jobid = int(parent["id"])
            stepno = int(sparam.get("sn", parent["next_step"]))
            if stepno < parent["next_step"]:  # above every step number submitted so far
                raise PJMError(4, f"Invalid step number: sn={stepno}.")
            prev = parent["subjobs"][-1] if parent["subjobs"] else None
        else:
            jobid = next_jobid(state)
            stepno, prev = int(sparam.get("sn", 0)), None
        if step_dep is not None:
            known = {int(sid.split("_")[1]) for sid in (parent or {}).get("subjobs", [])}
            if not known or not set(step_dep["steps"]) <= known:
                raise PJMError(4, f"Invalid step dependency expression: sd={sparam['sd']}.")
            step_dep["targets"] = [f"{jobid}_{n}" for n in step_dep["steps"]] or [prev]
        spool = os.path.join(state, "spool", str(jobid))
        os.makedirs(spool, exist_ok=True)
        script_path = os.path.join(spool, f"script.{stepno}" if opts.get("step") else "script")
        with open(script_path, "w", encoding="utf-8", errors="surrogateescape") as fh:
            fh.write(text)
        os.chmod(script_path, 0o700)
        base["script"] = script_path

        if opts.get("bulk"):
            ids = [f"{jobid}[{n}]" for n in bulk_range]
            save(state, {**base, "id": str(jobid), "jobid": str(jobid), "model": "BU",
                         "role": "parent", "subjobs": ids})
            for n, sid in zip(bulk_range, ids, strict=True):
                save(state, {**base, "id": sid, "jobid": str(jobid), "model": "BU",
                             "role": "sub", "bulknum": n})
            units = ids
            shown = str(jobid)
        elif opts.get("step"):
            sid = f"{jobid}_{stepno}"
            if parent is None:
                parent = {**base, "id": str(jobid), "jobid": str(jobid), "model": "ST",
                          "role": "parent", "subjobs": [], "next_step": 0, "name": name}
            parent["subjobs"].append(sid)
            parent["next_step"] = stepno + 1
            save(state, parent)
            save(state, {**base, "id": sid, "jobid": str(jobid), "model": "ST", "role": "sub",
                         "stepnum": stepno, "depends_on": prev, "step_dep": step_dep})
            units = [sid]
            shown = sid
        else:
            save(state, {**base, "id": str(jobid), "jobid": str(jobid), "model": "NM",
                         "role": "job"})
            units = [str(jobid)]
            shown = str(jobid)

    for unit in units:
        _spawn_supervisor(state, unit)
    print(f"[INFO] PJM 0000 pjsub Job {shown} submitted.")  # NormalJob, StepJob
    return 0


# --------------------------------------------------------------------------------------------
# supervisor: runs one unit
# --------------------------------------------------------------------------------------------


def _proc_start_ticks(pid: int) -> str | None:
    """Start time of ``pid`` from /proc (tells a live supervisor from a reused pid).

    ``None`` when there is no such process or it is a zombie.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return fields[19]


def supervisor_alive(rec: Record) -> bool:
    """Whether the unit's supervisor process still runs."""
    pid = rec.get("supervisor_pid")
    if not pid:
        # not started yet: give pjsub's child a moment before declaring it lost
        return time.time() - rec.get("accept_time", 0) < 30
    if os.path.exists("/proc/self/stat"):
        ticks = _proc_start_ticks(pid)
        return ticks is not None and ticks == rec.get("supervisor_ticks")
    try:  # no /proc: best effort
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _out_paths(rec: Record) -> tuple[str, str | None, str]:
    """Absolute stdout, stderr (``None`` if merged by ``-j``) and stats paths of a unit.

    ``<job name>.<(sub-)job id>.out|.err|.stats`` in the submission directory, "J" put
    before a job name that starts with a digit (NormalJob, StepJob, BulkJob); ``--spath``
    names the stats file.
    """
    label = rec["id"]  # 12345, 12345[3] or 12345_0
    name = f"J{rec['name']}" if rec["name"][:1].isdigit() else rec["name"]
    stem = os.path.join(rec["workdir"], f"{name[:63]}.{label}")
    stats = os.path.join(rec["workdir"], rec["spath"]) if rec.get("spath") else f"{stem}.stats"
    return f"{stem}.out", None if rec.get("merge") else f"{stem}.err", stats


def job_environment(rec: Record) -> dict[str, str]:
    """The environment a unit's script runs with."""
    try:
        pw = pwd.getpwuid(rec["uid"])
        home, shell = pw.pw_dir, pw.pw_shell or "/bin/sh"
    except KeyError:
        home, shell = "/", "/bin/sh"
    if rec.get("inherit_env"):
        env = dict(rec.get("submit_env") or {})
    else:
        default_path = "/usr/local/bin:/usr/bin:/bin"
        if rec["uid"] == 0:
            default_path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        env = {
            "HOME": home,
            "USER": rec["user"],
            "LOGNAME": rec["user"],
            "SHELL": shell,
            "PATH": os.environ.get("PJM_STANDIN_DEFAULT_PATH", default_path),
        }
        for keep in ("LANG", "LC_ALL", "TZ", "TMPDIR"):
            if keep in os.environ:
                env[keep] = os.environ[keep]
    # the -x variables first: a name of the guide's table below keeps PJM's value
    # (pjsubCommandOptions, "Environment variables in job scripts", attention)
    env.update(rec.get("env") or {})
    env.update(
        {
            "PWD": rec["workdir"],
            "PJM_JOBID": rec["jobid"],
            "PJM_SUBJOBID": rec["id"],
            "PJM_JOBNAME": rec["name"],
            "PJM_JOBDIR": rec["workdir"],
            "PJM_O_WORKDIR": rec["workdir"],
            "PJM_O_LOGNAME": rec["user"],
            "PJM_O_HOST": rec.get("host", ""),
            "PJM_O_HOME": home,
            "PJM_O_SHELL": shell,
            "PJM_O_PATH": rec.get("submit_path", ""),
            "PJM_O_LANG": rec.get("submit_lang", ""),
            "PJM_ENVIRONMENT": "BATCH",
        }
    )
    if rec.get("comment"):
        env["PJM_COMMENT"] = rec["comment"]
    if "bulknum" in rec:
        env["PJM_BULKNUM"] = str(rec["bulknum"])
    if "stepnum" in rec:
        env["PJM_STEPNUM"] = str(rec["stepnum"])
    return env


def _command(rec: Record) -> list[str]:
    """argv that runs the spooled script: its ``#!`` line, else the user's login shell."""
    with open(rec["script"], "rb") as fh:
        first = fh.readline()
    if first.startswith(b"#!"):
        return [rec["script"], *rec["args"]]
    return [job_environment(rec)["SHELL"], rec["script"], *rec["args"]]


def _compare(a: int, op: str, b: int) -> bool:
    return {
        "==": a == b,
        "!=": a != b,
        "<": a < b,
        ">": a > b,
        "<=": a <= b,
        ">=": a >= b,
    }[op]


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def write_stats(rec: Record) -> None:
    """The ``-s``/``-S`` statistics file ``JOBNAME.JOBID.stats``."""
    _, _, path = _out_paths(rec)
    with contextlib.suppress(OSError):
        _write_atomic(path, stats_block(rec) + "\n")


def stats_block(rec: Record) -> str:
    """Job statistical information, as in the stats file and ``pjstat -s``."""
    used = None
    if rec.get("start_time"):
        used = int((rec.get("end_time") or time.time()) - rec["start_time"])
    items = [
        ("JOB ID", rec["id"]),
        ("JOB NAME", rec["name"]),
        ("JOB TYPE", "BATCH"),
        ("JOB MODEL", rec["model"]),
        ("USER", rec["user"]),
        ("GROUP", rec["group"]),
        ("RESOURCE UNIT", "standin"),
        ("RESOURCE GROUP", rec["rscgrp"]),
        ("STATE", rec["state"]),
        ("LAST STATE", dash(rec.get("last_state"))),
        ("PJM CODE", dash(rec.get("pjm_code"))),
        ("REASON", dash(rec.get("reason"))),
        ("EXIT CODE", dash(rec.get("exit_code"))),
        ("SIGNAL NO", dash(rec.get("signal"))),
        ("NODE NUM (REQUIRE)", rec["node_require"]),
        ("MPI PROC NUM", str(rec["mpi_proc"])),
        ("ELAPSE TIME (LIMIT)", f"{fmt_hms(rec['elapse'])} ({rec['elapse']})"),
        ("ELAPSE TIME (USE)", "-" if used is None else f"{fmt_hms(used)} ({used})"),
        ("JOB ACCEPT DATE", fmt_full_date(rec.get("accept_time"))),
        ("JOB START DATE", fmt_full_date(rec.get("start_time"))),
        ("JOB END DATE", fmt_full_date(rec.get("end_time"))),
    ]
    if "bulknum" in rec:
        items.insert(2, ("BULK NO", str(rec["bulknum"])))
    if "stepnum" in rec:
        items.insert(2, ("STEP NO", str(rec["stepnum"])))
    lines = ["[Job Statistical Information]"]
    lines += [f" {key:<28}: {value}" for key, value in items]
    return "\n".join(lines)


def _finish(sdir: str, uid: str, /, **fields: Any) -> Record:
    rec = update(sdir, uid, end_time=time.time(), **fields)
    if rec.get("stats"):
        write_stats(rec)
    return rec


def supervise(state: str, uid: str) -> int:
    """Run one unit to its end (the body of the detached supervisor process)."""
    poll = 0.05
    grace = float(os.environ.get("PJM_STANDIN_KILL_GRACE", "2"))
    me = os.getpid()
    rec = update(state, uid, supervisor_pid=me, supervisor_ticks=_proc_start_ticks(me))
    if rec["state"] in FINAL_STATES:
        return 0
    rec = update(state, uid, state="QUE")

    def cancelled() -> bool:
        cur = load(state, uid)
        return bool(cur and cur.get("cancel"))

    # wait in the queue: optional delay, then a step waits for its predecessor
    until = time.monotonic() + float(os.environ.get("PJM_STANDIN_QUEUE_DELAY", "0"))
    while time.monotonic() < until:
        if cancelled():
            _finish(state, uid, state="CCL", pjm_code=1, reason=None)
            return 0
        time.sleep(poll)
    prev_id = rec.get("depends_on")
    if prev_id:
        while True:
            prev = load(state, prev_id)
            if prev is None or prev["state"] in FINAL_STATES:
                break
            if cancelled():
                _finish(state, uid, state="CCL", pjm_code=1, reason=None)
                return 0
            time.sleep(poll)
        if prev and prev.get("cancel_following"):
            _finish(state, uid, state="CCL", pjm_code=6, cancel_following=True)
            return 0
        dep = rec.get("step_dep")
        if dep:
            field = {"ec": "exit_code", "pc": "pjm_code", "sn": "signal"}[dep["var"]]
            values = [(load(state, t) or {}).get(field) for t in dep["targets"]]
            if any(v is not None and _compare(int(v), dep["op"], dep["value"]) for v in values):
                _finish(state, uid, state="CCL", pjm_code=6,
                        cancel_following=dep["action"] == "all")
                return 0
    if cancelled():
        _finish(state, uid, state="CCL", pjm_code=1, reason=None)
        return 0

    update(state, uid, state="RNA")
    update(state, uid, state="RNP")
    out_path, err_path, _ = _out_paths(rec)
    mode = "w"
    try:
        out = open(out_path, mode + "b")  # noqa: SIM115 (closed below)
        err = open(err_path, mode + "b") if err_path else None  # noqa: SIM115
    except OSError:
        _finish(state, uid, state="ERR", pjm_code=16, reason="NO CURRENT DIR")
        return 0
    try:
        proc = subprocess.Popen(
            _command(rec),
            cwd=rec["workdir"],
            # the stand-in's own variable: where its mpiexec finds this job's record
            env={**job_environment(rec), "PJM_STANDIN_JOB_STATE": os.path.abspath(state)},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err if err else subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError:
        out.close()
        if err:
            err.close()
        _finish(state, uid, state="EXT", pjm_code=21, reason=None)
        return 0
    out.close()
    if err:
        err.close()
    started = time.monotonic()
    update(state, uid, state="RUN", start_time=time.time(), pgid=proc.pid)

    deadline = started + rec["elapse"]
    why = None  # None (normal end), "elapse" or "cancel"
    next_check = 0.0
    while proc.poll() is None:
        now = time.monotonic()
        if now >= deadline:
            why = "elapse"
        elif now >= next_check:
            next_check = now + 0.2
            if cancelled():
                why = "cancel"
        if why:
            _kill_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                _kill_group(proc.pid, signal.SIGKILL)
            break
        time.sleep(poll)
    rc = proc.wait()
    _kill_group(proc.pid, signal.SIGKILL)  # whatever the script left behind
    update(state, uid, state="RNE")
    update(state, uid, state="RNO")
    sig = -rc if rc < 0 else None
    ec = 128 + sig if sig else rc
    if why == "elapse":
        _finish(state, uid, state="EXT", exit_code=ec, signal=sig, pjm_code=11,
                reason="ELAPSE LIMIT EXCEEDED")
    elif why == "cancel":
        _finish(state, uid, state="CCL", exit_code=ec, signal=sig, pjm_code=1,
                reason=None)
    else:
        _finish(state, uid, state="EXT", exit_code=ec, signal=sig, pjm_code=0)
    return 0


# --------------------------------------------------------------------------------------------
# pjstat
# --------------------------------------------------------------------------------------------


def reap_lost(state: str, records: list[Record]) -> list[Record]:
    """Mark units whose supervisor is gone as ``ERR`` (PJM code 27); return fresh records."""
    lost = [
        r
        for r in records
        if r.get("role") != "parent" and r["state"] not in FINAL_STATES and not supervisor_alive(r)
    ]
    if not lost:
        return records
    for r in lost:
        if r.get("pgid"):
            _kill_group(r["pgid"], signal.SIGKILL)
        with contextlib.suppress(KeyError):
            update(state, r["id"], state="ERR", pjm_code=27, end_time=time.time(),
                   reason="INTERNAL ERROR")
    return all_records(state)


_AGGREGATE_ORDER = ("RUN", "RNA", "RNP", "RNE", "RNO", "QUE", "ACC")


def derive_parent(parent: Record, subs: list[Record]) -> Record:
    """A bulk/step parent record with its state and times derived from its sub-jobs."""
    p = dict(parent)
    if not subs:
        return p
    states = [s["state"] for s in subs]
    if all(st in FINAL_STATES for st in states):
        if all(st == "CCL" for st in states):
            p["state"] = "CCL"
        elif "ERR" in states and "EXT" not in states:
            p["state"] = "ERR"
        else:
            p["state"] = "EXT"
        p["end_time"] = max((s.get("end_time") or 0) for s in subs) or None
    else:
        live = [st for st in states if st not in FINAL_STATES]
        p["state"] = next((st for st in _AGGREGATE_ORDER if st in live), live[0])
        if any(st in FINAL_STATES for st in states) and p["state"] in ("QUE", "ACC"):
            p["state"] = "RUN"  # some sub-jobs done, others waiting: the job is under way
    starts = [s["start_time"] for s in subs if s.get("start_time")]
    p["start_time"] = min(starts) if starts else None
    p["exit_code"] = max((s["exit_code"] for s in subs if s.get("exit_code") is not None),
                         default=None)
    p["pjm_code"] = max((s["pjm_code"] for s in subs if s.get("pjm_code") is not None),
                        default=None)
    return p


def _start_column(rec: Record) -> str:
    if rec.get("start_time"):
        return fmt_date(rec["start_time"])
    if rec["state"] in FINAL_STATES or rec.get("depends_on") or rec["state"] == "ACC":
        return "-"
    return f"({fmt_date(time.time(), with_seconds=False)})"  # estimated start: now


def _row(rec: Record, verbose: bool) -> str:
    is_step_parent = rec.get("model") == "ST" and rec.get("role") == "parent"
    elapse_lim = "-" if is_step_parent else fmt_hms(rec["elapse"], hour_width=4)
    node_req = "-" if is_step_parent else rec["node_require"]
    if not verbose:
        values = [rec["id"], rec["name"], rec["model"], rec["state"], rec["user"],
                  _start_column(rec), elapse_lim, node_req, "-", "-", "-"]
        return fmt_row(PJSTAT_COLUMNS, values)
    used = None
    if rec.get("start_time"):
        used = int((rec.get("end_time") or time.time()) - rec["start_time"])
    values = [
        rec["id"], rec["name"], rec["model"], rec["state"], rec["user"], rec["group"],
        _start_column(rec), fmt_hms(used, hour_width=4) if used is not None else "-",
        elapse_lim, node_req, "-", "-", "-", "-", "-", "-",
        dash(rec.get("last_state")), dash(rec.get("exit_code")), dash(rec.get("pjm_code")),
        dash(rec.get("signal")), "-", fmt_date(rec.get("accept_time")), rec["rscgrp"],
        dash(rec.get("reason")),
    ]
    return fmt_row(PJSTAT_V_COLUMNS, values)


#: a job id, a sub-job id, or a range of them: ``238``, ``239[1]``, ``240_0``, ``238-240``,
#: ``239[1-5]``, ``240_0-4`` (DisplayingJobStatus (ja), "display of specific jobs";
#: DeletingAJobJobOperations)
_ID_RE = re.compile(r"^(\d+)(?:-(\d+)|\[(\d+)(?:-(\d+))?\]|_(\d+)(?:-(\d+))?)?$")


def expand_ids(arg: str) -> list[str] | None:
    """The ids an argument names (``None`` if it is not an id)."""
    m = _ID_RE.match(arg)
    if not m:
        return None
    job = int(m[1])
    if m[2]:
        return [str(j) for j in range(job, int(m[2]) + 1)]
    if m[3]:
        return [f"{job}[{n}]" for n in range(int(m[3]), int(m[4] or m[3]) + 1)]
    if m[5]:
        return [f"{job}_{n}" for n in range(int(m[5]), int(m[6] or m[5]) + 1)]
    return [str(job)]


PJSTAT_USAGE = (
    "usage: pjstat [-H|--history [day=N]] [-v | -s | -S] [-E|--expand] [JOBID ...]"
    " (stand-in for Fujitsu PJM)"
)

#: pjstat options (DisplayingJobStatus (ja), "options of the job status command"):
#: option -> canonical name
_PJSTAT_FLAGS = {
    "-H": "history", "--history": "history", "-v": "verbose", "-s": "stats",
    "-S": "stats_nodes", "-E": "expand", "--expand": "expand", "--help": "help",
}
#: documented, not carried out here
_PJSTAT_NOT_IMPLEMENTED = ("--limit", "--with-summary", "--summary")

HISTORY_DAYS = 3
"""``-H`` without ``day=``: jobs ended in the last 3 days (DisplayingJobStatus (ja))."""


def _pjstat_error(code: int, message: str) -> int:
    print(f"[ERR.] PJM {code:04d} pjstat {message}", file=sys.stderr)
    return 1


def pjstat(argv: list[str]) -> int:
    """The ``pjstat`` command."""
    flags: set[str] = set()
    days = HISTORY_DAYS
    ids: list[str] = []
    for n, arg in enumerate(argv):
        if arg in _PJSTAT_FLAGS:
            flags.add(_PJSTAT_FLAGS[arg])
        elif arg.startswith("day=") and n > 0 and argv[n - 1] in ("-H", "--history"):
            if not (arg[4:].isdigit() and 1 <= int(arg[4:]) <= 90):  # an integer 1-90
                return _pjstat_error(4, f"Invalid value: {arg}.")
            days = int(arg[4:])
        elif arg in _PJSTAT_NOT_IMPLEMENTED:
            return _pjstat_error(4, f"{arg} is documented but not carried out by this stand-in.")
        elif arg.startswith("-") or arg.startswith("day="):
            return _pjstat_error(4, f"Invalid option: {arg}.")  # not in the guide
        elif (named := expand_ids(arg)) is not None:
            ids += named
        else:
            return _pjstat_error(211, f"Invalid jobid: {arg}.")
    if "help" in flags:
        print(PJSTAT_USAGE)
        return 0
    # -s excludes -v and -S; -S excludes -v and -s
    if len(flags & {"verbose", "stats", "stats_nodes"}) > 1:
        return _pjstat_error(4, "The combination of the specified options is invalid.")
    history, expand, verbose = "history" in flags, "expand" in flags, "verbose" in flags

    state = state_dir()
    records = reap_lost(state, all_records(state))
    by_id = {r["id"]: r for r in records}
    me = os.getuid()
    tops: list[Record] = []
    for r in records:  # the caller's own jobs only
        if r.get("role") == "sub" or r.get("uid") != me:
            continue
        if r.get("role") == "parent":
            r = derive_parent(r, [by_id[s] for s in r["subjobs"] if s in by_id])
        tops.append(r)
    tops.sort(key=lambda r: (int(r["jobid"]), r["id"]))

    def wanted_state(r: Record) -> bool:
        done = r["state"] in FINAL_STATES
        if history:  # -H: ended jobs (REJECT, EXIT, CANCEL ...) of the last `days` days
            return done and (r.get("end_time") or 0) >= time.time() - days * 86400
        return not done

    lines: list[Record] = []
    for top in tops:
        subs = [by_id[s] for s in top.get("subjobs", []) if s in by_id]
        if ids:
            if top["id"] in ids and wanted_state(top):
                lines.append(top)
                if expand:
                    lines += subs
            lines += [s for s in subs if s["id"] in ids and wanted_state(s)]
            continue
        if not wanted_state(top):
            continue
        lines.append(top)
        if expand:
            lines += subs

    if flags & {"stats", "stats_nodes"}:
        print("\n\n".join(stats_block(r) for r in lines))
        return 0
    columns = PJSTAT_V_COLUMNS if verbose else PJSTAT_COLUMNS
    print(fmt_row(columns, [title for title, _ in columns]))
    for r in lines:
        print(_row(r, verbose))
    return 0


# --------------------------------------------------------------------------------------------
# pjdel
# --------------------------------------------------------------------------------------------

#: documented pjdel options (DeletingAJobJobOperations); neither changes anything here
_PJDEL_OPTIONS = ("--enforce", "--llio-flush")


def pjdel(argv: list[str]) -> int:
    """The ``pjdel`` command (DeletingAJobJobOperations).

    ``[INFO] PJM 0100 pjdel Accepted job <id>.`` per job; a step job's id cancels and names
    each of its sub-jobs, a bulk job's id cancels all its sub-jobs in one line; an id that
    names no unfinished job of the caller gives ``[ERR.] PJM 0112 pjdel Job <id> does not
    exist.`` and exit status 1.
    """
    if "--help" in argv:
        print("usage: pjdel [--enforce] [--llio-flush] JOBID ... (stand-in for Fujitsu PJM)")
        return 0
    args = [a for a in argv if a not in _PJDEL_OPTIONS]
    bad = next((a for a in args if a.startswith("-")), None)
    if bad is not None or not args:
        print(f"[ERR.] PJM 0004 pjdel Invalid option: {bad}." if bad else
              "[ERR.] PJM 0004 pjdel Job ID is not specified.", file=sys.stderr)
        return 1
    state = state_dir()
    rc = 0
    for arg in args:
        named = expand_ids(arg)
        if named is None:
            print(f"[ERR.] PJM 0111 pjdel Invalid jobid: {arg}.", file=sys.stderr)
            rc = 1
            continue
        for jid in named:
            rc |= _cancel_one(state, jid)
    return rc


def _cancel_one(state: str, jid: str) -> int:
    with locked(state):
        rec = load(state, jid)
        units = []
        if rec is not None and rec.get("uid") == os.getuid():
            units = [load(state, s) for s in rec["subjobs"]] if rec.get("role") == "parent" else [rec]
        live = [u for u in units if u and u["state"] not in FINAL_STATES]
        if not live:
            print(f"[ERR.] PJM 0112 pjdel Job {jid} does not exist.", file=sys.stderr)
            return 1
        orphans = []
        for u in live:
            u["cancel"] = True
            save(state, u)
            if not supervisor_alive(u):
                orphans.append(u)
    for u in orphans:  # nobody left to act on the flag: do it here
        if u.get("pgid"):
            _kill_group(u["pgid"], signal.SIGKILL)
        update(state, u["id"], state="CCL", pjm_code=1, end_time=time.time(), reason=None)
    shown = [u["id"] for u in live] if rec and rec.get("model") == "ST" and rec.get("role") == "parent" else [jid]
    for sid in shown:
        print(f"[INFO] PJM 0100 pjdel Accepted job {sid}.")
    return 0


def main(argv: list[str]) -> int:
    """Entry point when this file is run directly: ``_supervise STATE ID`` or a command name."""
    if len(argv) == 3 and argv[0] == "_supervise":
        try:
            return supervise(argv[1], argv[2])
        except Exception:
            import traceback

            traceback.print_exc()
            with contextlib.suppress(Exception):
                _finish(argv[1], argv[2], state="ERR", pjm_code=27, reason="INTERNAL ERROR")
            return 1
    commands = {"pjsub": pjsub, "pjstat": pjstat, "pjdel": pjdel}
    if argv and argv[0] in commands:
        return commands[argv[0]](argv[1:])
    print("usage: _pjm.py pjsub|pjstat|pjdel ARGS...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
