"""``mpiexec`` of the PJM stand-in: Fujitsu MPI's launcher inside a job, as the guide documents it.

Runs inside a stand-in job (``PJM_SUBJOBID``, and ``PJM_STANDIN_JOB_STATE``, the stand-in's
own variable naming its state directory; the job's record gives its node count) and
starts the program **for real** as ``-n`` processes on this machine; each gets
``PJM_STANDIN_RANK`` and ``PJM_STANDIN_NODE`` (stand-in variables, not Fujitsu's) so that a
test can see where it was placed. Rules, each from the Fugaku user guide 1.52
(``_pjm.GUIDE``):

- ``--vcoordfile FILE``: one ``(x)`` node coordinate per line, one dimension, 0-based within
  the job's nodes (MPI/HowToExecuteABackgroundJob, "Create VCOORD_FILE file", the
  vcode1..vcode3 example: ``(0)`` to ``(14)`` for ``node=15``). The stand-in takes one line
  per process (the processes are placed in the file's order) and refuses a malformed line,
  another number of lines than ``-n``, and a coordinate beyond the job's nodes.
- Concurrent (background) ``mpiexec`` calls must each give a VCOORD file, and their
  coordinates must not overlap: "If there is a duplicate, an error will occur"
  (same page, "Notes on back ground execution").
- At most 128 run at once; the next one is refused with
  ``[ERR.] PLE 0050 plexec cannot be executed any further.`` (same page).
- A process's standard output and error never reach mpiexec's own: they go to files of
  each process, relative to the current directory (MPI/InputOutputRedirection). Without
  output options, ``./output.<jobid>/<rank rounded down to 1000>/<count>/stdout.<count>.
  <rank>`` and ``stderr...`` ("Standard Output File Naming Conventions"; ``<count>``:
  how many mpiexec the job has run). ``-stdout-proc``/``-ofout-proc`` and
  ``-stderr-proc``/``-oferr-proc`` send one stream to ``<path>.<count>.<rank>`` (the other
  keeps the default), ``-std-proc``/``-of-proc`` both to the same file ("Output list by
  option specification"), with the meta characters ``%j`` (job id), ``%m`` (count of
  mpiexec calls in the job), ``%r`` (rank) and ``%/Nr`` (rank rounded down to N). An
  empty output leaves no file, its directory is made all the same, unless
  ``PLE_MPI_STD_EMPTYFILE=on`` ("About standard output / standard error output when
  executing large-scale jobs"). ``-of``/``-std``, ``-ofout``/``-stdout``,
  ``-oferr``/``-stderr`` are ignored with ``[WARN] PLE 0605 plexec ignore option ...``.

Error wording other than the two quoted messages is the stand-in's own.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import _pjm

MAX_BACKGROUND = 128
"""Most mpiexec calls running at once in a job (MPI/HowToExecuteABackgroundJob)."""

_PROC_OUTPUT = {
    "-stdout-proc": "out", "-ofout-proc": "out",
    "-stderr-proc": "err", "-oferr-proc": "err",
    "-std-proc": "both", "-of-proc": "both",
}
_IGNORED = ("-of", "-std", "-ofout", "-stdout", "-oferr", "-stderr")
_COORD = re.compile(r"^\((\d+)\)$")


class MpiexecError(Exception):
    """A refusal: the message is printed on stderr and mpiexec exits with 1."""


def parse(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """Options before the program, and the program with its arguments."""
    opts: dict[str, str] = {}
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        word = argv[i]
        if word in ("-n", "--vcoordfile", *_PROC_OUTPUT, *_IGNORED):
            if i + 1 >= len(argv):
                raise MpiexecError(f"[ERR.] mpiexec: option {word} needs a value")
            if word in _IGNORED:
                print(f"[WARN] PLE 0605 plexec ignore option {word}"
                      f"(stdout outputs to {argv[i + 1]}).", file=sys.stderr)
            else:
                opts[word] = argv[i + 1]
            i += 2
            continue
        raise MpiexecError(f"[ERR.] mpiexec: option {word} is not supported by the stand-in")
    if i >= len(argv):
        raise MpiexecError("[ERR.] mpiexec: no program given")
    if "-n" in opts and not opts["-n"].isdigit():
        raise MpiexecError(f"[ERR.] mpiexec: -n {opts['-n']} is not a number of processes")
    return opts, argv[i:]


def read_vcoord(path: str, procs: int, nodes: int) -> list[int]:
    """Node coordinate of each process, from a one-dimensional VCOORD file."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = [ln.strip() for ln in fh.read().splitlines()]
    except OSError as exc:
        raise MpiexecError(
            f"[ERR.] mpiexec: cannot read VCOORD file {path}: {exc.strerror}"
        ) from None
    coords = []
    for n, line in enumerate(lines, 1):
        if not line:
            continue
        m = _COORD.match(line)
        if m is None:
            raise MpiexecError(f"[ERR.] mpiexec: VCOORD file {path} line {n}: {line!r} is not "
                               "a coordinate (x)")
        if int(m.group(1)) >= nodes:
            raise MpiexecError(f"[ERR.] mpiexec: VCOORD file {path} line {n}: node {m.group(1)} "
                               f"is beyond the job's {nodes} node(s)")
        coords.append(int(m.group(1)))
    if len(coords) != procs:
        raise MpiexecError(f"[ERR.] mpiexec: VCOORD file {path} has {len(coords)} "
                           f"coordinate(s) for -n {procs}")
    return coords


@contextmanager
def _job_lock(directory: str) -> Iterator[None]:
    with open(os.path.join(directory, ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _load(path: str) -> dict:
    try:
        return json.load(open(path, encoding="utf-8"))
    except (OSError, ValueError):
        return {"count": 0, "running": {}}


def register(directory: str, coords: list[int] | None) -> int:
    """Count this call and reserve its coordinates; return the job's mpiexec count."""
    path = os.path.join(directory, "mpiexec.json")
    with _job_lock(directory):
        state = _load(path)
        running = {int(pid): c for pid, c in state["running"].items()
                   if _pjm._proc_start_ticks(int(pid)) is not None}
        if len(running) >= MAX_BACKGROUND:
            raise MpiexecError("[ERR.] PLE 0050 plexec cannot be executed any further.")
        if running and (coords is None or any(c is None for c in running.values())):
            raise MpiexecError("[ERR.] mpiexec: concurrent mpiexec calls each need --vcoordfile")
        busy = {n for c in running.values() if c for n in c}
        clash = sorted(busy & set(coords or []))
        if clash:
            raise MpiexecError(f"[ERR.] mpiexec: VCOORD coordinates {clash} are used by "
                               "another mpiexec running in this job")
        state["count"] += 1
        running[os.getpid()] = sorted(set(coords)) if coords is not None else None
        state["running"] = {str(k): v for k, v in running.items()}
        _pjm._write_atomic(path, json.dumps(state))
        return int(state["count"])


def release(directory: str) -> None:
    """Give this call's coordinates back."""
    path = os.path.join(directory, "mpiexec.json")
    with _job_lock(directory):
        state = _load(path)
        state["running"].pop(str(os.getpid()), None)
        _pjm._write_atomic(path, json.dumps(state))


def output_path(template: str | None, kind: str, jobid: str, count: int, rank: int) -> str:
    """Where a process's stdout or stderr goes (meta characters expanded)."""
    if template is None:
        return f"./output.{jobid}/{rank // 1000 * 1000}/{count}/{kind}.{count}.{rank}"
    text = re.sub(r"%/(\d+)r", lambda m: str(rank // int(m.group(1)) * int(m.group(1))),
                  template)
    text = text.replace("%j", jobid).replace("%m", str(count)).replace("%r", str(rank))
    return f"{text}.{count}.{rank}"


def mpiexec(argv: list[str]) -> int:
    """Run the program as ``-n`` processes of the current stand-in job."""
    try:
        opts, program = parse(argv)
        uid = os.environ.get("PJM_SUBJOBID")
        state = os.environ.get("PJM_STANDIN_JOB_STATE") or _pjm.state_dir()
        rec = _pjm.load(state, uid) if uid else None
        if rec is None:
            raise MpiexecError("[ERR.] mpiexec: not inside a PJM job")
        nodes = int(rec.get("nodes", 1))
        procs = int(opts.get("-n", str(nodes * int(rec.get("proc_per_node") or 1))))
        coords = (read_vcoord(opts["--vcoordfile"], procs, nodes)
                  if "--vcoordfile" in opts else None)
        directory = os.path.join(state, "mpiexec", uid)
        os.makedirs(directory, exist_ok=True)
        count = register(directory, coords)
    except MpiexecError as exc:
        print(exc, file=sys.stderr)
        return 1
    out_t = next((v for k, v in opts.items() if _PROC_OUTPUT.get(k) in ("out", "both")), None)
    err_t = next((v for k, v in opts.items() if _PROC_OUTPUT.get(k) in ("err", "both")), None)
    jobid = rec["jobid"]
    try:
        procs_run = []
        written: list[str] = []
        for rank in range(procs):
            # -std-proc: both streams to one file (one handle, so neither overwrites the other)
            paths = [output_path(template, kind, jobid, count, rank)
                     for kind, template in (("stdout", out_t), ("stderr", err_t))]
            files = {}
            for path in dict.fromkeys(paths):
                os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
                files[path] = open(path, "wb")  # noqa: SIM115 (closed once started)
            env = {**os.environ, "PJM_STANDIN_RANK": str(rank),
                   "PJM_STANDIN_NODE": str(coords[rank] if coords else rank % nodes)}
            procs_run.append(subprocess.Popen(program, stdout=files[paths[0]],
                                              stderr=files[paths[1]],
                                              stdin=subprocess.DEVNULL, env=env))
            for fh in files.values():
                fh.close()
            written += files
        code = max(p.wait() for p in procs_run)
        if os.environ.get("PLE_MPI_STD_EMPTYFILE", "off") != "on":
            # no file for an empty output; its directory stays
            for path in written:
                if os.path.getsize(path) == 0:
                    os.remove(path)
        return code
    finally:
        release(directory)
