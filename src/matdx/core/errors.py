"""Exception hierarchy.

Every error a user can cause derives from :class:`MatdxError`; the CLI prints its
message on one line and exits with :attr:`MatdxError.exit_code`.
"""

from __future__ import annotations


class MatdxError(Exception):
    """Base class for errors reported to users as one line."""

    exit_code: int = 2


class InputError(MatdxError):
    """A campaign, profile, structure or query given by the user is invalid."""


class CampaignError(InputError):
    """A campaign file is missing, malformed or inconsistent."""


class UnknownCampaignError(MatdxError):
    """A campaign name is not in the store."""


class StoreUnavailableError(MatdxError):
    """The database cannot be reached."""

    exit_code = 3


class StoreBusyError(MatdxError):
    """The embedded store is in use by another process."""

    exit_code = 3


class EngineError(MatdxError):
    """A calculation engine failed in a way that its handlers could not repair."""


class DeadlineReachedError(EngineError):
    """A calculation stopped cleanly before its deadline and can resume in its directory.

    Raised by engines given ``deadline=`` (seconds since the epoch): the work directory
    holds what the next call with the same directory continues from.
    """


class BatchFailedError(MatdxError):
    """Calculations of a batch failed (each failure is stored with its reason).

    Raised after the batch's records are written, so that the workflow manager marks the
    batch FIZZLED; rerunning it retries only the failed calculations.
    """


class AuthError(MatdxError):
    """The data service refused the caller's token (invalid, expired or revoked)."""

    exit_code = 4
