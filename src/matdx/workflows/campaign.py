"""Loading and checking campaign files before anything runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from matdx.core.errors import CampaignError, InputError
from matdx.core.hashing import stable_hash
from matdx.core.yamlio import Loc, line_of, load_yaml, validate_yaml_model
from matdx.engines.registry import ENGINES, check_elements
from matdx.generation.prototypes import PROTOTYPES
from matdx.schemas.campaign import CampaignSpec


@dataclass(frozen=True)
class LoadedCampaign:
    """A validated campaign with its source text and the line of each key."""

    spec: CampaignSpec
    path: Path
    raw: dict[str, Any]

    @property
    def settings(self) -> dict[str, Any]:
        """Engine settings of the pre-screen, as stored with each calculation."""
        p = self.spec.prescreen
        return {
            "engine": p.engine,
            "relax_cell": p.relax_cell,
            "optimizer": p.optimizer,
            "fmax": p.fmax,
            "steps": p.steps,
        }

    @property
    def settings_hash(self) -> str:
        """Hash of :attr:`settings` (part of the calculation idempotency key)."""
        return stable_hash(self.settings)

    def step_plan(self) -> list[dict[str, Any]]:
        """The steps after the pre-screen, each with its settings, hash and input.

        A step's settings include the hash of its input step, so that the same engine
        settings on other input structures are a different calculation.

        Returns
        -------
        list of dict
            ``name``, ``engine``, ``task``, ``input`` (step name), ``input_hash``,
            ``settings`` (stored with each calculation), ``settings_hash``, ``select``,
            ``batch_size``.
        """
        hashes = {"prescreen": self.settings_hash}
        previous = "prescreen"
        out = []
        for step in self.spec.steps:
            source = step.input or previous
            options = dict(step.settings)
            key = ENGINES[step.engine].elements_setting
            if key is not None:
                options.setdefault(key, sorted(self.spec.chemical_space.elements))
            settings = {
                "engine": step.engine,
                "task": step.task,
                "step": step.name,
                "options": options,
                "input_hash": hashes[source],
            }
            hashes[step.name] = stable_hash(settings)
            out.append(
                {
                    "name": step.name,
                    "engine": step.engine,
                    "task": step.task,
                    "input": source,
                    "input_hash": hashes[source],
                    "settings": settings,
                    "settings_hash": hashes[step.name],
                    "select": step.select.model_dump(),
                    "batch_size": step.batch_size,
                }
            )
            previous = step.name
        return out


def validate_campaign(data: Any, lines: dict[Loc, int], what: str) -> CampaignSpec:
    """Validate loaded YAML as a campaign, including registry and engine checks.

    Parameters
    ----------
    data
        Loaded YAML.
    lines
        Key path → line.
    what
        File name for messages.

    Returns
    -------
    CampaignSpec
        The validated campaign.

    Raises
    ------
    CampaignError
        One line naming the file, line and field.
    """
    context = {"prototypes": set(PROTOTYPES), "engines": set(ENGINES)}
    try:
        spec = cast(CampaignSpec, validate_yaml_model(CampaignSpec, data, lines, what, context))
        if spec.chemical_space.orderings:
            for parent in spec.chemical_space.orderings.parents:
                if parent not in PROTOTYPES or PROTOTYPES[parent].n_slots != 1:
                    loc = ("chemical_space", "orderings", "parents")
                    raise InputError(
                        f"{what} line {line_of(loc, lines)}, field {'.'.join(loc)}: "
                        f"{parent!r} is not a single-site-type prototype (fcc, bcc, hcp)"
                    )
        try:
            check_elements(spec.prescreen.engine, spec.chemical_space.elements)
        except InputError as exc:
            loc = ("chemical_space", "elements")
            raise InputError(
                f"{what} line {line_of(loc, lines)}, field chemical_space.elements: {exc}"
            ) from None
        for i, step in enumerate(spec.steps):
            loc = ("steps", i, "engine")
            try:
                if step.task != "phonons":
                    ENGINES[step.engine].calculator(step.task)
                elif not ENGINES[step.engine].tasks or "static" not in dict(
                    ENGINES[step.engine].tasks
                ):
                    raise InputError(f"engine {step.engine!r} cannot compute forces for phonons")
                check_elements(step.engine, spec.chemical_space.elements)
            except InputError as exc:
                raise InputError(
                    f"{what} line {line_of(loc, lines)}, field steps.{i}.engine: {exc}"
                ) from None
    except InputError as exc:
        raise CampaignError(str(exc)) from None
    return spec


def load_campaign(path: str | Path) -> LoadedCampaign:
    """Read and validate a campaign file.

    Parameters
    ----------
    path
        YAML file.

    Returns
    -------
    LoadedCampaign
        The validated campaign.

    Raises
    ------
    CampaignError
        If the file is missing, malformed or invalid (one line, with line and field).
    """
    p = Path(path)
    try:
        data, lines = load_yaml(p, what="campaign file")
    except InputError as exc:
        raise CampaignError(str(exc)) from None
    spec = validate_campaign(data, lines, f"campaign file {p.name}")
    return LoadedCampaign(spec, p, data)
