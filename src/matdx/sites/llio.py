"""Fugaku's LLIO volumes and data area, derived from the paths a job really uses.

A job reaches the second-layer storage through LLIO, and ``PJM_LLIO_GFSCACHE`` must list
every volume it uses (``/vol0002`` ... ``/vol0006``; Spack is on ``/vol0004``; Fugaku
guide, JobExecution/NormalJob and SampleScripts, UsageRules "Disk"). Home and data
directories are symbolic links (``/home/<user>``, ``/vol0n0m/data/<group>``) to those
volumes, so the volumes are read from the resolved paths, never from the names. Jobs run
from a data area: PJM refuses to submit from a home directory ("The current directory is
not a data area", NormalJob).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from matdx.core.errors import InputError
from matdx.sites.models import SiteProfile


def volume_of(path: str | Path, pattern: str) -> str | None:
    """The volume (first component of the resolved path, if it matches ``pattern``)."""
    real = Path(os.path.realpath(path))
    if len(real.parts) < 2:
        return None
    top = "/" + real.parts[1]
    return top if re.fullmatch(pattern, top) else None


def job_volumes(profile: SiteProfile, paths: Iterable[str | Path]) -> str | None:
    """``PJM_LLIO_GFSCACHE`` for a job that uses ``paths``: their volumes and the profile's.

    Without ``pjm.llio.gfscache_from_paths`` the profile's fixed ``gfscache`` is returned.
    """
    llio = profile.pjm.llio if profile.pjm is not None else None
    if llio is None:
        return None
    fixed = llio.gfscache.split(":") if llio.gfscache else []
    if not llio.gfscache_from_paths:
        return llio.gfscache
    found = [v for p in paths if (v := volume_of(p, llio.volume_pattern)) is not None]
    volumes = sorted(set(fixed) | set(found))
    return ":".join(volumes) or None


def node_paths(profile: SiteProfile) -> list[str]:
    """Absolute paths the profile makes every job use (its Python, image, LLIO transfers)."""
    out = []
    if profile.compute_env.python and profile.compute_env.python.startswith("/"):
        out.append(profile.compute_env.python.split()[0])
    if profile.container is not None:
        out.append(profile.container.image)
    if profile.pjm is not None:
        out.extend(profile.pjm.llio.transfer)
    return out


def check_data_dir(profile: SiteProfile, data_dir: Path, home: Path | None = None) -> None:
    """Refuse a data directory under the home directory on a site whose jobs may not run there.

    Raises
    ------
    InputError
        One line naming the fix (``MATDX_DATA_DIR`` in the group's data area).
    """
    if profile.pjm is None or not profile.pjm.data_area_only:
        return
    home = home or Path.home()
    real = Path(os.path.realpath(data_dir))
    for root in {home, Path(os.path.realpath(home))}:
        if real == root or root in real.parents or data_dir == root or root in data_dir.parents:
            raise InputError(
                f"the data directory {data_dir} is in your home directory, from which "
                f"{profile.site} runs no jobs (not a data area): set MATDX_DATA_DIR to a "
                f"directory of your group's data area, e.g. /vol0004/data/<group>/matdx"
            )
