"""Small two-element campaigns with a data tier, built in memory for store and service tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matdx.workflows.campaign import LoadedCampaign, validate_campaign


def loaded(name: str, elements: list[str], data: dict[str, Any]) -> LoadedCampaign:
    """A campaign of ``elements`` (binary prototypes, no orderings) with ``data`` governance."""
    raw = {"name": name, "chemical_space": {"elements": elements, "max_components": 2,
                                             "prototypes": ["fcc", "bcc", "L1_2", "L1_0", "B2"],
                                             "orderings": None},
           "batch_size": 50, "data": data}
    return LoadedCampaign(validate_campaign(raw, {}, name), Path(name), raw)
