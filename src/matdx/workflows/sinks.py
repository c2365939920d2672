"""Where a step puts its results: the store (online) or a file in the launch directory.

Compute nodes that cannot reach the database run with ``MATDX_OFFLINE=1``: each record is
appended to ``matdx_records.jsonl`` in the launch directory as soon as it exists (so a job
killed at its walltime keeps what it finished), and ``matdx sync`` ingests the file on the
login node. Both sinks skip materials they already hold, so a re-run resumes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

RECORDS_FILE = "matdx_records.jsonl"
OFFLINE_ENV = "MATDX_OFFLINE"


class Sink(Protocol):
    """Destination of calculation records."""

    flush_every_s: float
    """Records are handed over at least this often."""

    def completed(self, material_ids: Sequence[str], settings_hash: str) -> set[str]:
        """Materials that already have a completed record."""
        ...  # pragma: no cover

    def write(self, records: Sequence[dict[str, Any]]) -> None:
        """Keep records (idempotently)."""
        ...  # pragma: no cover

    def close(self) -> None:
        """Make everything durable."""
        ...  # pragma: no cover


class StoreSink:
    """Records go to the property store (in bulk, at least every 20 s)."""

    flush_every_s = 20.0

    def __init__(self) -> None:
        from matdx.workflows.context import open_store

        self.store, self.backend = open_store()
        self.where = self.backend.target.display

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
        """See :class:`Sink`."""
        self.backend.flush()


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
        """See :class:`Sink`."""
        with self.path.open("a", encoding="utf-8") as fh:
            for r in records:
                fh.write(json.dumps(r, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def close(self) -> None:
        """See :class:`Sink`."""


def open_sink() -> Sink:
    """The file sink when ``MATDX_OFFLINE=1``, else the store."""
    return FileSink() if os.environ.get(OFFLINE_ENV) == "1" else StoreSink()
