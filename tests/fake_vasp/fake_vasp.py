#!/usr/bin/env python3
"""A fake ``vasp_std``: check the inputs in the working directory, then replay recorded output.

VASP is licensed and cannot run in tests. This program stands in for it as the command of an
engine profile (the one seam that tests patch). Standard library only, so that it checks
matdx's input files with a parser of its own, not with the pymatgen that wrote them.

The plan is a JSON file named by ``FAKE_VASP_PLAN``::

    {"data_dir": "/path/to/shared/data/vasp",
     "steps": [
       {"expect": {"incar": {"ALGO": "Fast", "NSW": 99},      # tags and values
                   "incar_absent": ["EDIFFG"],                # tags that must be missing
                   "kpoints": {"style": "Gamma", "grid": [8, 8, 8]},
                   "poscar": {"species": ["Cu"], "counts": [4],
                              "lattice": [[...], [...], [...]], "frac": [[...], ...]},
                   "poscar_is_previous_contcar": false,       # custodian copied CONTCAR
                   "potcar": ["Cu_pv"]},                      # POTCAR.spec or POTCAR TITELs
        "replay": "postprocess",          # recorded case whose outputs are copied, or null
        "stdout": "errors_stdout/vasp.out.too_few_bands",     # optional recorded stdout
        "stderr": "errors_stdout/std_err.txt.oom",            # optional recorded stderr
        "damage": {"vasprun.xml": "truncate"},                # optional: empty|truncate|garbage
        "returncode": 0},
       ...]}

Run *n* of the plan uses step *n*. Every run appends one JSON line to ``<plan>.log``: the
inputs it read (INCAR as text values, KPOINTS, POSCAR, POTCAR symbols), the checks that
passed and the errors. On any mismatch, or a run beyond the plan, it writes ``FAKE VASP
INPUT ERROR: ...`` to stderr, replays nothing and exits with status 3.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

OUTPUTS = ("vasprun.xml", "OUTCAR", "OSZICAR", "CONTCAR")
"""Recorded files replayed (from ``NAME`` or ``NAME.gz``)."""

TOL = 1e-6


# --- reading VASP inputs -----------------------------------------------------------------

def read_incar(path: Path) -> dict[str, str]:
    """INCAR tags (upper case) → value text."""
    tags = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#")[0].split("!")[0]
        for part in line.split(";"):
            if "=" in part:
                key, value = part.split("=", 1)
                tags[key.strip().upper()] = value.strip()
    return tags


def _numbers(text: str) -> list[float]:
    """Expand VASP's ``n*x`` shorthand: ``"2*0.6 5"`` → ``[0.6, 0.6, 5.0]``."""
    out: list[float] = []
    for tok in text.split():
        if "*" in tok:
            n, x = tok.split("*")
            out += [float(x)] * int(n)
        else:
            out.append(float(tok))
    return out


def _bool(text: str) -> bool | None:
    t = text.strip().strip(".").lower()
    return {"true": True, "t": True, "false": False, "f": False}.get(t)


def same_value(found: str, expected: Any) -> bool:
    """Compare an INCAR value text with an expected JSON value."""
    if isinstance(expected, bool):
        return _bool(found) is expected
    if isinstance(expected, (int, float)):
        try:
            (value,) = _numbers(found)
        except ValueError:
            return False
        return abs(value - expected) <= TOL * max(1.0, abs(expected))
    if isinstance(expected, list):
        try:
            values = _numbers(found)
        except ValueError:
            return False
        return len(values) == len(expected) and all(
            abs(a - b) <= TOL * max(1.0, abs(b)) for a, b in zip(values, expected, strict=True)
        )
    return found.strip().lower() == str(expected).strip().lower()


def read_kpoints(path: Path) -> dict[str, Any]:
    """Automatic-mesh KPOINTS: style and grid."""
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    if int(lines[1].split()[0]) != 0:
        return {"style": "explicit", "nkpts": int(lines[1].split()[0])}
    return {"style": lines[2], "grid": [int(x) for x in lines[3].split()[:3]]}


def read_poscar(path: Path) -> dict[str, Any]:
    """VASP 5 POSCAR: species, counts, lattice (Å) and fractional coordinates."""
    lines = [ln.split("!")[0].strip() for ln in path.read_text().splitlines()]
    scale = float(lines[1].split()[0])
    lattice = [[scale * float(x) for x in lines[i].split()[:3]] for i in (2, 3, 4)]
    species = lines[5].split()
    counts = [int(x) for x in lines[6].split()]
    i = 7
    if lines[i][:1].lower() == "s":
        i += 1
    cartesian = lines[i][:1].lower() in ("c", "k")
    coords = [[float(x) for x in lines[i + 1 + k].split()[:3]] for k in range(sum(counts))]
    if cartesian:
        coords = [_to_frac([scale * c for c in xyz], lattice) for xyz in coords]
    return {"species": species, "counts": counts, "lattice": lattice, "frac": coords}


def _to_frac(xyz: list[float], lattice: list[list[float]]) -> list[float]:
    # solve xyz = f @ lattice with Cramer's rule (3x3)
    a = lattice

    def det(m: list[list[float]]) -> float:
        return (m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
                - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
                + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]))

    at = [[a[j][i] for j in range(3)] for i in range(3)]  # columns are lattice vectors
    d = det(at)
    out = []
    for k in range(3):
        m = [row[:] for row in at]
        for r in range(3):
            m[r][k] = xyz[r]
        out.append(det(m) / d)
    return out


def read_potcar_symbols(directory: Path) -> list[str] | None:
    """Symbols from POTCAR.spec, or from the TITEL lines of a POTCAR."""
    spec = directory / "POTCAR.spec"
    if spec.is_file():
        return [ln.strip() for ln in spec.read_text().splitlines() if ln.strip()]
    potcar = directory / "POTCAR"
    if potcar.is_file():
        return [ln.split("=", 1)[1].split()[1] for ln in potcar.read_text().splitlines()
                if ln.strip().startswith("TITEL")]
    return None


# --- checking -----------------------------------------------------------------------------

def _close_frac(a: float, b: float, tol: float) -> bool:
    d = (a - b) % 1.0
    return min(d, 1.0 - d) <= tol


def same_geometry(found: dict[str, Any], expected: dict[str, Any], tol: float) -> list[str]:
    """Differences between two POSCAR geometries (empty if the same)."""
    errors = []
    for key in ("species", "counts"):
        if key in expected and found[key] != expected[key]:
            errors.append(f"POSCAR {key} {found[key]} != expected {expected[key]}")
    if "lattice" in expected:
        bad = any(abs(x - y) > tol for r, s in zip(found["lattice"], expected["lattice"], strict=True)
                  for x, y in zip(r, s, strict=True))
        if bad:
            errors.append(f"POSCAR lattice {found['lattice']} != expected {expected['lattice']}")
    if "frac" in expected:
        if len(found["frac"]) != len(expected["frac"]):
            errors.append(f"POSCAR has {len(found['frac'])} sites, expected {len(expected['frac'])}")
        else:
            for k, (f, e) in enumerate(zip(found["frac"], expected["frac"], strict=True)):
                if not all(_close_frac(x, y, tol) for x, y in zip(f, e, strict=True)):
                    errors.append(f"POSCAR site {k} at {f} != expected {e}")
                    break
    return errors


def check_inputs(cwd: Path, expect: dict[str, Any], previous: dict[str, Any] | None,
                 data_dir: Path) -> tuple[dict[str, Any], list[str], list[str]]:
    """Read the inputs in ``cwd`` and compare them with ``expect``: (seen, passed, errors)."""
    seen: dict[str, Any] = {}
    ok: list[str] = []
    errors: list[str] = []
    for name in ("INCAR", "POSCAR"):
        if not (cwd / name).is_file():
            errors.append(f"no {name} in {cwd}")
    if errors:
        return seen, ok, errors
    incar = seen["incar"] = read_incar(cwd / "INCAR")
    for key, value in expect.get("incar", {}).items():
        if key not in incar:
            errors.append(f"INCAR lacks {key} (expected {value!r})")
        elif not same_value(incar[key], value):
            errors.append(f"INCAR {key} = {incar[key]!r}, expected {value!r}")
        else:
            ok.append(f"INCAR {key} = {incar[key]}")
    for key in expect.get("incar_absent", []):
        if key in incar:
            errors.append(f"INCAR sets {key} = {incar[key]!r}, expected it absent")
        else:
            ok.append(f"INCAR has no {key}")
    if "kpoints" in expect:
        if not (cwd / "KPOINTS").is_file():
            errors.append("no KPOINTS")
        else:
            kp = seen["kpoints"] = read_kpoints(cwd / "KPOINTS")
            want = expect["kpoints"]
            if "style" in want and kp["style"][:1].lower() != want["style"][:1].lower():
                errors.append(f"KPOINTS style {kp['style']!r}, expected {want['style']!r}")
            if "grid" in want and kp.get("grid") != want["grid"]:
                errors.append(f"KPOINTS grid {kp.get('grid')}, expected {want['grid']}")
            if not errors:
                ok.append(f"KPOINTS {kp}")
    poscar = seen["poscar"] = read_poscar(cwd / "POSCAR")
    if "poscar" in expect:
        diff = same_geometry(poscar, expect["poscar"], expect["poscar"].get("tol", 1e-5))
        errors += diff
        if not diff:
            ok.append("POSCAR matches the expected structure")
    if expect.get("poscar_is_previous_contcar"):
        case = (previous or {}).get("replayed")
        if not case:
            errors.append("POSCAR should be the previous CONTCAR, but no run replayed one")
        else:
            contcar = read_poscar(data_dir / case / "CONTCAR")
            diff = same_geometry(poscar, contcar, 1e-6)
            errors += [f"{d} (previous CONTCAR of {case})" for d in diff]
            if not diff:
                ok.append(f"POSCAR is the CONTCAR replayed from {case}")
    symbols = seen["potcar"] = read_potcar_symbols(cwd)
    if "potcar" in expect:
        if symbols != expect["potcar"]:
            errors.append(f"POTCAR symbols {symbols}, expected {expect['potcar']}")
        else:
            ok.append(f"POTCAR symbols {symbols}")
    if symbols is not None and len(symbols) != len(poscar["species"]):
        errors.append(f"{len(symbols)} POTCARs for {len(poscar['species'])} POSCAR species")
    return seen, ok, errors


# --- replaying ----------------------------------------------------------------------------

def replay(case_dir: Path, cwd: Path) -> list[str]:
    """Copy the recorded outputs of ``case_dir`` into ``cwd``, decompressing; their names."""
    copied = []
    for name in OUTPUTS:
        src = case_dir / name
        gz = case_dir / f"{name}.gz"
        if gz.is_file():
            with gzip.open(gz, "rb") as fin, open(cwd / name, "wb") as fout:
                shutil.copyfileobj(fin, fout)
        elif src.is_file():
            shutil.copyfile(src, cwd / name)
        else:
            continue
        copied.append(name)
    return copied


def damage(path: Path, how: str) -> None:
    """Spoil a replayed file as a killed or broken run would: empty, truncated, garbage."""
    data = path.read_bytes()
    if how == "empty":
        path.write_bytes(b"")
    elif how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(data[:5000] + b"<<<\x00garbage")
    else:
        raise ValueError(f"unknown damage {how!r}")


def main() -> int:
    """Run one step of the plan in the current directory."""
    plan_path = Path(os.environ["FAKE_VASP_PLAN"])
    plan = json.loads(plan_path.read_text())
    data_dir = Path(plan["data_dir"])
    log_path = Path(f"{plan_path}.log")
    log = read_log(plan_path)
    run = len(log)
    cwd = Path.cwd()
    entry: dict[str, Any] = {"run": run, "cwd": str(cwd), "replayed": None, "files": []}
    if run >= len(plan["steps"]):
        seen, ok, errors = {}, [], [f"run {run + 1} but the plan has {len(plan['steps'])} steps"]
        step: dict[str, Any] = {}
    else:
        step = plan["steps"][run]
        previous = log[-1] if log else None
        seen, ok, errors = check_inputs(cwd, step.get("expect", {}), previous, data_dir)
    entry.update(seen=seen, passed=ok, errors=errors)
    if errors:
        with log_path.open("a") as f:
            f.write(json.dumps(entry) + "\n")
        for e in errors:
            print(f"FAKE VASP INPUT ERROR: {e}", file=sys.stderr)
        return 3
    for name in OUTPUTS:  # VASP rewrites all of these on every run
        (cwd / name).unlink(missing_ok=True)
    if step.get("stdout"):
        sys.stdout.write((data_dir / step["stdout"]).read_text(errors="replace"))
    else:
        print(f" running on    1 total cores\n vasp.fake: replaying {step.get('replay')}")
    if step.get("stderr"):
        sys.stderr.write((data_dir / step["stderr"]).read_text(errors="replace"))
    if step.get("replay"):
        entry["replayed"] = step["replay"]
        entry["files"] = replay(data_dir / step["replay"], cwd)
    for name, how in step.get("damage", {}).items():
        damage(cwd / name, how)
    with log_path.open("a") as f:
        f.write(json.dumps(entry) + "\n")
    return int(step.get("returncode", 0))


def read_log(plan_path: str | Path) -> list[dict[str, Any]]:
    """The runs recorded so far for a plan (one dict per run)."""
    path = Path(f"{plan_path}.log")
    if not path.is_file():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def write_plan(path: str | Path, steps: list[dict[str, Any]], data_dir: str | Path) -> Path:
    """Write a plan file (and clear its log)."""
    path = Path(path)
    path.write_text(json.dumps({"data_dir": str(data_dir), "steps": steps}, indent=1))
    Path(f"{path}.log").unlink(missing_ok=True)
    return path


if __name__ == "__main__":
    sys.exit(main())
