"""Loading and checking campaign files before anything runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from matdx.core.errors import CampaignError, InputError
from matdx.core.hashing import stable_hash
from matdx.core.yamlio import Loc, line_of, load_yaml, validate_yaml_model
from matdx.engines.registry import ENGINES, check_elements, check_task
from matdx.generation.ionic import read_seed
from matdx.generation.prototypes import PROTOTYPES
from matdx.schemas.campaign import CampaignSpec
from matdx.schemas.names import PRESCREEN


@dataclass(frozen=True)
class LoadedCampaign:
    """A validated campaign with its source text and the line of each key."""

    spec: CampaignSpec
    path: Path
    raw: dict[str, Any]

    @property
    def settings(self) -> dict[str, Any]:
        """Settings of step 0, the pre-screen, as stored with each calculation."""
        return dict(self.step_plan()[0]["settings"])

    @property
    def settings_hash(self) -> str:
        """Hash of :attr:`settings` (part of the pre-screen's calculation ids)."""
        return str(self.step_plan()[0]["settings_hash"])

    def step_plan(self) -> list[dict[str, Any]]:
        """Every step of the campaign, the pre-screen first, each with its settings and hash.

        Step 0 is the pre-screen (:data:`~matdx.schemas.names.PRESCREEN`): every unique
        candidate, a relaxation (``vc-relax`` with ``relax_cell``), quick enough to need
        no directory of its own. A later step's settings include the hash of its input
        step, so that the same engine settings on other input structures are a different
        calculation. The stored settings (and so every calculation id) are those matdx has
        always stored for each kind of step.

        Returns
        -------
        list of dict
            ``name``, ``engine``, ``task``, ``options`` (what the engine gets),
            ``input`` (step name, ``None`` for step 0), ``input_hash``, ``settings``
            (stored with each calculation), ``settings_hash``, ``select``,
            ``batch_size``, ``resumable`` (each material runs in a directory of its own
            that outlives the job, and stops at the job's deadline to continue there) and
            ``resources`` (the step's :class:`~matdx.schemas.campaign.TaskResources` as a
            dict, ``None`` if not given).
        """
        p = self.spec.prescreen
        options = {"optimizer": p.optimizer, "fmax": p.fmax, "steps": p.steps}
        settings: dict[str, Any] = {"engine": p.engine, "relax_cell": p.relax_cell, **options}
        plan = [
            {
                "name": PRESCREEN,
                "engine": p.engine,
                "task": "vc-relax" if p.relax_cell else "relax",
                "options": options,
                "input": None,
                "input_hash": None,
                "settings": settings,
                "settings_hash": stable_hash(settings),
                "select": None,
                "batch_size": self.spec.batch_size,
                "resumable": False,
                "resources": None,
            }
        ]
        hashes = {PRESCREEN: plan[0]["settings_hash"]}
        for step in self.spec.steps:
            source = step.input or plan[-1]["name"]
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
            plan.append(
                {
                    "name": step.name,
                    "engine": step.engine,
                    "task": step.task,
                    "options": options,
                    "input": source,
                    "input_hash": hashes[source],
                    "settings": settings,
                    "settings_hash": hashes[step.name],
                    "select": step.select.model_dump(),
                    "batch_size": step.batch_size,
                    "resumable": True,
                    "resources": None if step.resources is None else step.resources.model_dump(),
                }
            )
        return plan


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
        # every step, step 0 included: (where an error is reported, engine, task); an
        # element the pre-screen cannot treat is an error of the chemical space
        checks: list[tuple[Loc, Loc, str, str]] = [
            (
                ("prescreen", "engine"),
                ("chemical_space", "elements"),
                spec.prescreen.engine,
                "vc-relax" if spec.prescreen.relax_cell else "relax",
            )
        ]
        checks += [
            (("steps", i, "engine"), ("steps", i, "engine"), st.engine, st.task)
            for i, st in enumerate(spec.steps)
        ]
        for task_loc, elements_loc, engine, task in checks:
            # phonons: displacements by phonopy, forces from the engine's static task
            for loc, check, arg in (
                (task_loc, check_task, "static" if task == "phonons" else task),
                (elements_loc, check_elements, spec.chemical_space.elements),
            ):
                try:
                    check(engine, arg)  # type: ignore[operator]
                except InputError as exc:
                    field = ".".join(str(x) for x in loc)
                    raise InputError(
                        f"{what} line {line_of(loc, lines)}, field {field}: {exc}"
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
    space = spec.chemical_space
    if space.seeds:
        # seed files are named relative to the campaign file; each must be readable
        seeds = [str((p.parent / s).resolve()) for s in space.seeds]
        for i, seed in enumerate(seeds):
            try:
                read_seed(seed)
            except InputError as exc:
                loc = ("chemical_space", "seeds", i)
                raise CampaignError(
                    f"campaign file {p.name} line {line_of(loc, lines)}, field "
                    f"chemical_space.seeds: {exc}"
                ) from None
        space = space.model_copy(update={"seeds": seeds})
        spec = spec.model_copy(update={"chemical_space": space})
    return LoadedCampaign(spec, p, data)
