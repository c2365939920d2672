"""``matdx doctor``: one line per check of a set-up, each failure with its fix."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from matdx.cli.ui import console


@dataclass(frozen=True)
class Check:
    """Outcome of one check."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    optional: bool = False


def _run(argv: list[str], timeout: float = 30, stdin: str = "") -> tuple[int, str]:
    """Run a probe in a scratch directory; return its exit code and output.

    pw.x given no input leaves ``CRASH`` and ``input_tmp.in`` in its working directory.
    """
    import tempfile

    try:
        with tempfile.TemporaryDirectory(prefix="matdx-doctor-") as scratch:
            p = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, input=stdin, cwd=scratch
            )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, str(exc)
    return p.returncode, p.stdout + p.stderr


def check_database(db: str | None, profile: Path | None) -> Check:
    """Database reachable, and its flavour and version."""
    from matdx.core.dburi import parse_db_uri
    from matdx.core.errors import MatdxError
    from matdx.core.settings import get_settings
    from matdx.store.backend import open_backend

    s = get_settings(db_uri=db)
    target = parse_db_uri(s.db_uri, s.data_dir)
    try:
        backend = open_backend(target, s.server_timeout_ms)
    except MatdxError as exc:
        return Check(
            "database",
            False,
            str(exc),
            "start the server, or set MATDX_DB_URI to a reachable mongodb:// URI",
        )
    if target.kind == "embedded":
        return Check("database", True, f"embedded store {target.path} (single process)")
    info = backend.new_client().admin.command("buildInfo")
    flavour = f"FerretDB {info['ferretdbVersion']}" if "ferretdbVersion" in info else "MongoDB"
    return Check(
        "database", True, f"{flavour} (wire version {info.get('version')}) at {target.display}"
    )


def check_mpi(db: str | None, profile: Path | None) -> Check:
    """The mpi4py task farm starts two ranks."""
    mpiexec = Path(sys.executable).parent / "mpiexec"
    exe = str(mpiexec) if mpiexec.exists() else shutil.which("mpiexec")
    if exe is None:
        return Check(
            "mpi",
            False,
            "no mpiexec for the task farm",
            "pip install 'matdx[mpi]' (mpi4py and MPICH)",
        )
    code, out = _run(
        [
            exe,
            "-n",
            "2",
            sys.executable,
            "-c",
            # one line, from rank 0 only: output of two ranks may interleave
            "from mpi4py import MPI; c = MPI.COMM_WORLD; n = c.allreduce(1); "
            "print(f'ranks={n}') if c.rank == 0 else None",
        ],
        timeout=60,
    )
    if code != 0 or "ranks=2" not in out:
        return Check(
            "mpi",
            False,
            f"{exe} -n 2 failed: {out.strip()[-200:]}",
            "check the MPI installation behind mpi4py",
        )
    return Check("mpi", True, f"mpi4py task farm runs 2 ranks with {exe}")


def check_mpi_library(db: str | None, profile: Path | None) -> Check:
    """The MPI library behind mpi4py; in a PJM job (a Fugaku compute node), Fujitsu MPI."""
    code, out = _run(
        [sys.executable, "-c",
         "from mpi4py import MPI; print(MPI.Get_library_version().splitlines()[0])"],
        timeout=60,
    )
    library = out.strip().splitlines()[-1] if out.strip() else "nothing"
    if code != 0:
        return Check("mpi-library", False, f"mpi4py failed: {library[:200]}",
                     "install mpi4py against the site's MPI")
    if os.environ.get("PJM_JOBID") and "Fujitsu" not in library:
        return Check(
            "mpi-library",
            False,
            f"in PJM job {os.environ['PJM_JOBID']}, mpi4py uses {library[:120]}, not Fujitsu MPI",
            "spack load the py-mpi4py built with Fujitsu MPI before the node's Python",
        )
    return Check("mpi-library", True, f"mpi4py uses {library[:160]}")


def check_llio(db: str | None, profile: Path | None) -> Check:
    """In a PJM job with LLIO, the data directory's volume is among the cached volumes."""
    cached = os.environ.get("PJM_LLIO_GFSCACHE")
    if not cached:
        return Check("llio", True, "not in an LLIO job (PJM_LLIO_GFSCACHE unset)", optional=True)
    from matdx.core.settings import get_settings
    from matdx.sites.llio import volume_of
    from matdx.sites.models import Llio

    pattern = Llio().volume_pattern
    if profile is not None:
        from matdx.sites import load_profile

        site = load_profile(profile)
        if site.pjm is not None:
            pattern = site.pjm.llio.volume_pattern
    data_dir = get_settings().data_dir
    volume = volume_of(data_dir, pattern)
    if volume is not None and volume not in cached.split(":"):
        return Check(
            "llio",
            False,
            f"data directory {data_dir} is on {volume}, not in PJM_LLIO_GFSCACHE={cached}",
            f"submit with matdx submit (it adds {volume}) or #PJM -x "
            f"PJM_LLIO_GFSCACHE={cached}:{volume}",
        )
    if volume is None:
        return Check("llio", True, f"data directory {data_dir} is on no LLIO volume")
    return Check("llio", True, f"data directory {data_dir} is on {volume}, cached")


def _program(
    name: str, env: str, default: str, version_args: list[str], marker: str, fix: str
) -> Check:
    import shlex

    command = shlex.split(os.environ.get(env, default))
    prog = command[-1]
    path = shutil.which(prog)
    if path is None:
        return Check(name, False, f"{prog} not found", fix, optional=True)
    _code, out = _run([path, *version_args], stdin="")
    version = next((ln.strip() for ln in out.splitlines() if marker in ln), "version unknown")
    version = version.split(" starts ")[0]
    return Check(name, True, f"{path}: {version[:120]}")


def check_qe(db: str | None, profile: Path | None) -> Check:
    """pw.x found, with its version and pseudopotentials."""
    c = _program(
        "quantum-espresso",
        "MATDX_QE_COMMAND",
        "pw.x",
        [],
        "Program PWSCF",
        "apt-get install quantum-espresso (or set MATDX_QE_COMMAND)",
    )
    pseudo = Path(os.environ.get("MATDX_QE_PSEUDO_DIR", "/usr/share/espresso/pseudo"))
    n = len(list(pseudo.glob("*.UPF")) + list(pseudo.glob("*.upf"))) if pseudo.is_dir() else 0
    if c.ok and n == 0:
        return Check(
            "quantum-espresso",
            False,
            f"{c.detail}; no pseudopotentials in {pseudo}",
            "apt-get install quantum-espresso-data or set MATDX_QE_PSEUDO_DIR",
        )
    return Check(
        c.name,
        c.ok,
        f"{c.detail}; {n} pseudopotentials in {pseudo}" if c.ok else c.detail,
        c.fix,
        optional=True,
    )


def check_lammps(db: str | None, profile: Path | None) -> Check:
    """Lmp found, with its version and EAM potentials."""
    c = _program(
        "lammps",
        "MATDX_LAMMPS_COMMAND",
        "lmp",
        ["-h"],
        "Parallel Simulator",
        "apt-get install lammps (or set MATDX_LAMMPS_COMMAND)",
    )
    long_name = "Large-scale Atomic/Molecular Massively Parallel Simulator - "
    c = dataclasses.replace(c, detail=c.detail.replace(long_name, "LAMMPS "))
    pots = Path(os.environ.get("MATDX_LAMMPS_POTENTIALS", "/usr/share/lammps/potentials"))
    n = len(list(pots.glob("*eam*"))) if pots.is_dir() else 0
    return Check(
        c.name,
        c.ok,
        f"{c.detail}; {n} EAM potentials in {pots}" if c.ok else c.detail,
        c.fix,
        optional=True,
    )


def check_vasp(db: str | None, profile: Path | None) -> Check:
    """VASP configured (it is licensed, so optional)."""
    if not os.environ.get("MATDX_VASP_COMMAND"):
        return Check(
            "vasp",
            False,
            "MATDX_VASP_COMMAND is not set (VASP is licensed)",
            "set MATDX_VASP_COMMAND='mpirun -np N vasp_std' and PMG_VASP_PSP_DIR",
            optional=True,
        )
    return _program("vasp", "MATDX_VASP_COMMAND", "vasp_std", [], "vasp", "install VASP")


def check_emt(db: str | None, profile: Path | None) -> Check:
    """ASE EMT and the elements it treats."""
    import ase

    from matdx.engines.emt.core import SUPPORTED_ELEMENTS

    return Check(
        "emt", True, f"ASE {ase.__version__} EMT for {', '.join(sorted(SUPPORTED_ELEMENTS))}"
    )


def check_scheduler(db: str | None, profile: Path | None) -> Check:
    """Batch-system commands of the profile (or any) on PATH."""
    commands = {"slurm": ["sbatch", "squeue", "scancel"], "pjm": ["pjsub", "pjstat", "pjdel"]}
    kind = None
    if profile is not None:
        from matdx.sites import load_profile

        kind = load_profile(profile).scheduler
    found = {k: [c for c in v if shutil.which(c)] for k, v in commands.items()}
    if kind in commands:
        missing = sorted(set(commands[kind]) - set(found[kind]))
        if missing:
            return Check(
                "scheduler",
                False,
                f"{kind}: {', '.join(missing)} not on PATH",
                f"run on a {kind} login node or add its commands to PATH",
            )
        return Check("scheduler", True, f"{kind}: {', '.join(commands[kind])} found")
    seen = [k for k, v in found.items() if len(v) == len(commands[k])]
    return Check(
        "scheduler",
        True,
        f"batch systems found: {', '.join(seen) or 'none'} (local runs need none)",
    )


def check_profile(db: str | None, profile: Path | None) -> Check:
    """The site profile validates."""
    if profile is None:
        return Check("profile", True, "no --profile given", optional=True)
    from matdx.core.errors import MatdxError
    from matdx.sites import load_profile

    try:
        p = load_profile(profile)
    except MatdxError as exc:
        return Check("profile", False, str(exc), "fix the field named in the message")
    return Check("profile", True, f"{profile}: site {p.site} ({p.scheduler})")


CHECKS: dict[str, Callable[[str | None, Path | None], Check]] = {
    "database": check_database,
    "mpi": check_mpi,
    "mpi-library": check_mpi_library,
    "llio": check_llio,
    "scheduler": check_scheduler,
    "profile": check_profile,
    "emt": check_emt,
    "quantum-espresso": check_qe,
    "lammps": check_lammps,
    "vasp": check_vasp,
}


def doctor(
    profile: Annotated[
        Path | None, typer.Option("--profile", help="Site profile to check.")
    ] = None,
    db: Annotated[str | None, typer.Option("--db", help="Database URI.")] = None,
) -> None:
    """Check the set-up: database, MPI, batch system, profile, engines. One line each."""
    failed = False
    for name, fn in CHECKS.items():
        try:
            c = fn(db, profile)
        except Exception as exc:  # a broken check is itself a finding
            c = Check(name, False, f"{type(exc).__name__}: {exc}", "see the message")
        mark = "ok  " if c.ok else ("skip" if c.optional else "FAIL")
        line = f"{mark} {c.name:<16} {c.detail}"
        if not c.ok and c.fix:
            line += f" — fix: {c.fix}"
        console.print(line, highlight=False, markup=False, soft_wrap=True)
        failed = failed or (not c.ok and not c.optional)
    if failed:
        raise typer.Exit(1)
