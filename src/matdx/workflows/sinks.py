"""Where a step reads its inputs and puts its results: the store, or launch-dir files.

A batch names its materials by id; their structures come from the store's materials.
Compute nodes that cannot reach the database run with ``MATDX_OFFLINE=1``: the structures
are read from ``matdx_inputs.json``, written into the launch directory when the Firework
is reserved on the login node (:func:`write_inputs`), and each record is appended to
``matdx_records.jsonl`` as soon as it exists (so a job killed at its walltime keeps what
it finished); ``matdx sync`` ingests that file on the login node. Both sinks skip
materials they already hold, so a re-run resumes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

RECORDS_FILE = "matdx_records.jsonl"
INPUTS_FILE = "matdx_inputs.json"
OFFLINE_ENV = "MATDX_OFFLINE"


class Sink(Protocol):
    """Destination of calculation records."""

    flush_every_s: float
    """Records are handed over at least this often."""

    def structures(self, material_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Input structures (pymatgen dicts) of these materials, by id; unknown ids left out."""
        ...  # pragma: no cover

    def completed(self, material_ids: Sequence[str], settings_hash: str) -> set[str]:
        """Materials that already have a completed record."""
        ...  # pragma: no cover

    def write(self, records: Sequence[dict[str, Any]]) -> None:
        """Keep records (idempotently)."""
        ...  # pragma: no cover

    def close(self) -> None:
        """Make everything durable (the embedded store: see ``Backend.checkpoint``)."""
        ...  # pragma: no cover


class StoreSink:
    """Records go to the property store (in bulk, at least every 20 s)."""

    flush_every_s = 20.0

    def __init__(self) -> None:
        from matdx.workflows.context import open_store

        self.store, self.backend = open_store()
        self.where = self.backend.target.display

    def structures(self, material_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """See :class:`Sink` (retried while the server is away)."""
        from matdx.core.retry import retry_db

        return retry_db(
            lambda: self.store.structures(material_ids), "read input structures", self.where
        )

    def completed(self, material_ids: Sequence[str], settings_hash: str) -> set[str]:
        """See :class:`Sink` (retried while the server is away)."""
        from matdx.core.retry import retry_db

        return retry_db(
            lambda: self.store.completed(material_ids, settings_hash),
            "look up completed calculations",
            self.where,
        )

    def write(self, records: Sequence[dict[str, Any]]) -> None:
        """See :class:`Sink` (retried while the server is away; writes are idempotent)."""
        from matdx.core.retry import retry_db

        retry_db(
            lambda: self.store.write_calculations(records),
            f"write {len(records)} calculations",
            self.where,
        )

    def close(self) -> None:
        """See :class:`Sink` (the embedded store's file is written at intervals)."""
        self.backend.checkpoint()


def read_records(path: Path) -> list[dict[str, Any]]:
    """Records of a records file; a torn last line (job killed mid-write) is skipped."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


class FileSink:
    """Records are appended to :data:`RECORDS_FILE` in the working directory, each at once."""

    flush_every_s = 0.0

    def __init__(self, directory: Path | None = None) -> None:
        self.path = (directory or Path.cwd()) / RECORDS_FILE
        self.inputs = self.path.with_name(INPUTS_FILE)

    def structures(self, material_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """See :class:`Sink` (from :data:`INPUTS_FILE`)."""
        if not material_ids:
            return {}
        held = json.loads(self.inputs.read_text(encoding="utf-8")) if self.inputs.exists() else {}
        return {m: held[m] for m in material_ids if m in held}

    def completed(self, material_ids: Sequence[str], settings_hash: str) -> set[str]:
        """See :class:`Sink`."""
        wanted = set(material_ids)
        return {
            r["material_id"]
            for r in read_records(self.path)
            if r.get("status") == "completed"
            and r.get("settings_hash") == settings_hash
            and r["material_id"] in wanted
        }

    def write(self, records: Sequence[dict[str, Any]]) -> None:
        """See :class:`Sink`; each record is appended at once.

        The records reach the operating system at once, so a process killed at its
        walltime keeps them; :meth:`close` puts them on disk.
        """
        with self.path.open("a", encoding="utf-8") as fh:
            for r in records:
                fh.write(json.dumps(r, default=str) + "\n")

    def close(self) -> None:
        """See :class:`Sink`; one ``fsync`` for the whole batch.

        An ``fsync`` is a round trip to the servers on a parallel file system, so there is
        one per batch, not one per record. Records not yet on disk when a node crashes are
        computed again when the batch reruns.
        """
        if self.path.exists():
            with self.path.open("rb") as fh:
                os.fsync(fh.fileno())


def write_inputs(launch_dir: Path, structures: dict[str, dict[str, Any]]) -> None:
    """Write the input structures of an offline launch (read by :class:`FileSink`)."""
    tmp = launch_dir / (INPUTS_FILE + ".part")
    tmp.write_text(json.dumps(structures), encoding="utf-8")
    tmp.replace(launch_dir / INPUTS_FILE)


def open_sink() -> Sink:
    """The file sink when ``MATDX_OFFLINE=1``, else the store."""
    return FileSink() if os.environ.get(OFFLINE_ENV) == "1" else StoreSink()
