"""The compute nodes' environment: which Python runs matdx there, and what must not.

A job runs on compute nodes that may differ from the host that submits it (Fugaku: x86-64
login nodes, A64FX aarch64 compute nodes). The profile's ``compute_env`` says what the
nodes are and which Python runs matdx there; these functions decide, from it and from this
host, what a job may use, and report it (``matdx profile check``).
"""

from __future__ import annotations

import platform
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from matdx.core.errors import InputError
from matdx.sites.models import SiteProfile

_SPACK_LOAD = re.compile(r"(?:^|[;&|]\s*)spack\s+load\s+(?P<specs>[^;&|]+)")


def host_arch() -> str:
    """The architecture of the host matdx runs on (``uname -m``)."""
    return platform.machine()


@dataclass(frozen=True)
class NodeEnv:
    """How a job of a profile runs matdx on its compute nodes, seen from one host."""

    node_arch: str
    host_arch: str
    python: list[str]
    """The command that starts matdx's Python on the nodes (before ``-m matdx...``)."""
    from_host: bool
    """Whether that Python is this host's own (same architecture, none configured)."""

    @property
    def foreign(self) -> bool:
        """The nodes are of another architecture than this host."""
        return self.node_arch != self.host_arch


def node_env(profile: SiteProfile, host: str | None = None) -> NodeEnv:
    """Resolve the Python of the compute nodes for jobs submitted from ``host``.

    Raises
    ------
    InputError
        If the nodes are of another architecture and the profile names no Python for them
        (neither ``compute_env.python`` nor a container).
    """
    host = host or host_arch()
    env = profile.compute_env
    arch = env.arch or host
    c = profile.container
    if c is not None:
        return NodeEnv(arch, host, [*c.exec_command, *c.options, c.image, "python"], False)
    if env.python is not None:
        return NodeEnv(arch, host, shlex.split(env.python), False)
    if arch != host:
        raise InputError(
            f"profile {profile.site}: the compute nodes are {arch} but this host is {host}, so "
            f"this host's Python cannot run there: set compute_env.python (a Python with "
            f"matdx and mpi4py on the nodes) or a container"
        )
    return NodeEnv(arch, host, [sys.executable], True)


def host_paths(text: str, roots: list[Path] | None = None) -> list[str]:
    """Paths of this host's Python environment that occur in ``text`` (a job script).

    ``roots`` defaults to this interpreter's ``sys.prefix`` and ``sys.base_prefix``.
    """
    roots = roots if roots is not None else [Path(sys.prefix), Path(sys.base_prefix)]
    found = []
    for root in {str(r) for r in roots}:
        if root not in ("/", "/usr", "/usr/local") and root in text:
            found.append(root)
    return sorted(found)


def check_job_text(profile: SiteProfile, text: str, host: str | None = None) -> None:
    """Refuse a job script for nodes of another architecture that uses this host's Python.

    Raises
    ------
    InputError
        Naming the first such path.
    """
    env = node_env(profile, host)
    if env.foreign and (paths := host_paths(text)):
        raise InputError(
            f"the job for {profile.site} ({env.node_arch} nodes) would use {paths[0]}, this "
            f"{env.host_arch} host's Python environment: set compute_env.python in the profile"
        )


def ambiguous_spack_specs(lines: list[str]) -> list[str]:
    """``spack load`` specs that name no version (``@``) or hash (``/``).

    ``spack load python`` fails when two pythons are installed (Fugaku's public Spack has
    several); a full spec (``python@3.11.6 %fj@4.10.0``) or a hash (``/abcdefg``) does not.
    """
    out = []
    for line in lines:
        for m in _SPACK_LOAD.finditer(line):
            for word in shlex.split(m["specs"], comments=True):
                if word.startswith("-") or word.startswith(("%", "^", "arch=", "target=")):
                    continue
                if "@" not in word and not word.startswith("/") and "=" not in word:
                    out.append(word)
    return out


def report(profile: SiteProfile, host: str | None = None) -> list[str]:
    """Lines for ``matdx profile check`` about the compute nodes' environment.

    Raises
    ------
    InputError
        As :func:`node_env`.
    """
    env = node_env(profile, host)
    where = "the same as this host" if not env.foreign else f"this host: {env.host_arch}"
    lines = [f"compute nodes: {env.node_arch} ({where})"]
    setup = [*profile.setup, *profile.compute_env.setup]
    how = (
        "this host's Python"
        if env.from_host
        else "the image's Python" if profile.container is not None else "the profile's Python"
    )
    lines.append(
        f"matdx on the nodes: {shlex.join(env.python)} ({how}, after {len(setup)} set-up lines)"
    )
    for spec in ambiguous_spack_specs(setup):
        lines.append(
            f"warning: 'spack load {spec}' names no version or hash and may match several "
            f"installs: give a full spec (name@version %compiler) or /hash"
        )
    return lines
