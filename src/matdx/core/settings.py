"""User and site settings: one pydantic-settings class, read through :func:`get_settings`.

Values come from environment variables with the ``MATDX_`` prefix (``MATDX_DB_URI``,
``MATDX_DATA_DIR``, ``MATDX_USER``, ``MATDX_GROUPS``), then from defaults. Nothing is read
at import time.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated

import platformdirs
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _default_data_dir() -> Path:
    return platformdirs.user_data_path("matdx")


def _default_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # pragma: no cover - no passwd entry
        return "anonymous"


class MatdxSettings(BaseSettings):
    """Settings of one matdx installation."""

    model_config = SettingsConfigDict(env_prefix="MATDX_", extra="forbid")

    db_uri: str = Field(
        "embedded",
        description=(
            "Database for both the FireWorks LaunchPad and the property store: "
            "'embedded' (a file-persisted in-process store under data_dir), "
            "'embedded:/path/store.json', or a mongodb:// URI."
        ),
    )
    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="Directory for the embedded store, run directories and caches.",
    )
    user: str = Field(default_factory=_default_user, description="Caller identity for reads.")
    groups: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Groups/projects the caller belongs to."
    )
    server_timeout_ms: int = Field(
        5000, ge=100, description="How long to wait for the database server before failing."
    )

    @field_validator("groups", mode="before")
    @classmethod
    def _split_groups(cls, value: object) -> object:
        if isinstance(value, str):
            return [g.strip() for g in value.split(",") if g.strip()]
        return value

    @property
    def runs_dir(self) -> Path:
        """Directory under which campaign launch directories are created."""
        return self.data_dir / "runs"


def get_settings(**overrides: object) -> MatdxSettings:
    """Read the settings from the environment, applying explicit ``overrides``.

    Parameters
    ----------
    **overrides
        Field values that take precedence over the environment (e.g. from CLI flags).
        ``None`` values are ignored.

    Returns
    -------
    MatdxSettings
        A fresh settings object.
    """
    return MatdxSettings(**{k: v for k, v in overrides.items() if v is not None})
