"""The campaign file: what to generate, how to pre-screen it, how to rank it.

Validation is purely structural plus checks that only need a validation *context*
(``{"prototypes": {...}, "engines": {...}}``) supplied by the caller, so that this module
stays free of registries and databases.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pymatgen.core.periodic_table import Element

from matdx.schemas.names import PRESCREEN

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"

RankingKey = Literal[
    "energy_above_hull", "formation_energy_per_atom", "energy_per_atom", "volume_per_atom"
]
Target = Literal[
    "energy_per_atom",
    "formation_energy_per_atom",
    "energy_above_hull",
    "volume_per_atom",
    "spacegroup",
]
Tier = Literal["open", "shared-closed", "closed"]


class StrictModel(BaseModel):
    """Base for user-facing input: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _context_names(info: ValidationInfo, key: str) -> set[str] | None:
    ctx = info.context or {}
    names = ctx.get(key)
    return set(names) if names is not None else None


def _registered_engine(v: str, info: ValidationInfo) -> str:
    known = _context_names(info, "engines")
    if known is not None and v not in known:
        raise ValueError(f"unknown engine {v!r} (known: {', '.join(sorted(known))})")
    return v


EngineName = Annotated[str, AfterValidator(_registered_engine)]
"""An engine's name, checked against the ``engines`` of the validation context."""


class Orderings(StrictModel):
    """Symmetry-distinct orderings of parent lattices in small supercells."""

    parents: list[str] = Field(
        default_factory=lambda: ["fcc", "bcc"],
        description="Parent lattices (prototype names with a single site type).",
    )
    sizes: list[int] = Field(
        default_factory=lambda: [2, 3, 4],
        description="Supercell sizes (multiples of the parent primitive cell).",
    )

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, v: list[int]) -> list[int]:
        if any(n < 1 or n > 8 for n in v):
            raise ValueError("supercell sizes must be between 1 and 8")
        return sorted(set(v))


class ChemicalSpace(StrictModel):
    """Elements, prototypes and size limits of the candidate space."""

    elements: list[str] = Field(..., min_length=1, max_length=20, description="Chemical elements.")
    min_components: int = Field(1, ge=1, le=4, description="Fewest distinct elements.")
    max_components: int = Field(3, ge=1, le=4, description="Most distinct elements.")
    prototypes: list[str] = Field(
        default_factory=lambda: ["fcc", "bcc", "hcp", "L1_2", "L1_0", "B2", "D0_3", "rocksalt"],
        description="Decorated prototype structures.",
    )
    orderings: Orderings | None = Field(
        default_factory=Orderings, description="Supercell orderings; null to disable."
    )
    min_atoms: int = Field(1, ge=1, le=500, description="Smallest cell kept.")
    max_atoms: int = Field(16, ge=1, le=500, description="Largest cell kept.")
    min_distance: float = Field(
        1.5, gt=0, le=5, description="Smallest allowed interatomic distance (Å)."
    )
    charge_balanced: bool = Field(
        False,
        description="Keep only compounds that common oxidation states of their elements "
        "make neutral (pymatgen's Composition.oxi_state_guesses); for ionic compounds.",
    )
    seeds: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="CIF or POSCAR files (relative to the campaign file) of known "
        "structures, substituted with the campaign's elements by pymatgen's data-driven "
        "ionic substitution probabilities.",
    )
    substitution_threshold: float = Field(
        1e-3, gt=0, le=1, description="Smallest substitution probability kept (seeds)."
    )

    @field_validator("elements")
    @classmethod
    def _elements(cls, v: list[str]) -> list[str]:
        for el in v:
            if not isinstance(el, str) or not Element.is_valid_symbol(el):
                raise ValueError(f"unknown element {el!r}")
        if len(set(v)) != len(v):
            raise ValueError("elements are listed twice")
        return v

    @field_validator("prototypes")
    @classmethod
    def _prototypes(cls, v: list[str], info: ValidationInfo) -> list[str]:
        known = _context_names(info, "prototypes")
        if known is not None:
            for p in v:
                if p not in known:
                    raise ValueError(f"unknown prototype {p!r} (known: {', '.join(sorted(known))})")
        return v

    @model_validator(mode="after")
    def _components(self) -> ChemicalSpace:
        if self.min_components > self.max_components:
            raise ValueError("min_components is larger than max_components")
        if self.min_components > len(self.elements):
            raise ValueError("min_components is larger than the number of elements")
        if self.min_atoms > self.max_atoms:
            raise ValueError("min_atoms is larger than max_atoms")
        return self


class Prescreen(StrictModel):
    """Cheap relaxation applied to every unique candidate."""

    engine: EngineName = Field("emt", description="Engine name from the engine registry.")
    relax_cell: bool = Field(True, description="Relax the cell together with the positions.")
    optimizer: Literal["BFGS", "FIRE"] = Field("BFGS", description="ASE optimizer.")
    fmax: float = Field(0.05, gt=0, le=10, description="Force convergence threshold (eV/Å).")
    steps: int = Field(300, ge=1, le=100_000, description="Maximum optimizer steps.")


class Selection(StrictModel):
    """Which results of the input step go on to a step."""

    max_energy_above_hull: float | None = Field(
        None, ge=0, le=100, description="Keep those at most this far above the hull (eV/atom)."
    )
    top: int | None = Field(
        None, ge=1, le=1_000_000, description="Then keep the N lowest by energy above hull."
    )
    max_sites: int | None = Field(None, ge=1, le=500, description="Skip larger cells.")
    references: bool | Literal["lowest"] = Field(
        True,
        description="Also compute the elemental phases of each element involved: every "
        "one the input step has (fcc, bcc, hcp and those the campaign generated) for a "
        "relax, vc-relax or static step, whose formation energies and hull take the lowest "
        "of them at the step's own level of theory; the input step's lowest for md and "
        "phonons, and for every step with 'lowest'.",
    )


StepTask = Literal["relax", "vc-relax", "static", "md", "phonons"]


class TaskResources(StrictModel):
    """What one task of a step needs: nodes, MPI ranks and OpenMP threads per rank.

    Give ``ranks_per_node`` or ``ranks`` (all ranks of the task, spread evenly over its
    nodes), not both; the profile's ``default_layout`` fills what is left out. Checked
    against the site's nodes (cores, NUMA domains) when a job is planned
    (:mod:`matdx.sites.slots`).
    """

    nodes: int = Field(1, ge=1, le=100_000, description="Nodes of one task.")
    ranks_per_node: int | None = Field(None, ge=1, le=4096, description="MPI ranks per node.")
    ranks: int | None = Field(None, ge=1, le=10_000_000, description="MPI ranks in all.")
    threads: int | None = Field(None, ge=1, le=4096, description="OpenMP threads per rank.")

    @model_validator(mode="after")
    def _ranks(self) -> TaskResources:
        if self.ranks is not None and self.ranks_per_node is not None:
            raise ValueError("give ranks or ranks_per_node, not both")
        if self.ranks is not None and self.ranks % self.nodes:
            raise ValueError(f"{self.ranks} ranks cannot be spread evenly over {self.nodes} nodes")
        return self


class Step(StrictModel):
    """A calculation after the pre-screen, on the results of an earlier step."""

    name: str = Field(..., pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,31}$", description="Step name.")
    engine: EngineName = Field(..., description="Engine name from the engine registry.")
    task: StepTask = Field(..., description="relax, vc-relax, static, md or phonons.")
    input: str | None = Field(
        None, description="Step whose final structures are the input (default: the one before)."
    )
    select: Selection = Field(default_factory=Selection)
    settings: dict[str, Any] = Field(
        default_factory=dict, description="Engine keywords (e.g. ecutwfc, kspacing, timestep)."
    )
    batch_size: int = Field(1, ge=1, le=10_000, description="Materials per Firework.")
    resources: TaskResources | None = Field(
        None, description="Nodes, ranks and threads of one task (MPI engines; default: the "
        "profile's default_layout on one node)."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if v == PRESCREEN:
            raise ValueError(f"{PRESCREEN!r} is the name of the pre-screen")
        return v


class Ranking(StrictModel):
    """How results are ordered."""

    key: RankingKey = "energy_above_hull"
    ascending: bool = True


class StoreSettings(StrictModel):
    """Where results go; ``uri`` overrides nothing if ``MATDX_DB_URI`` is set."""

    uri: str | None = Field(None, description="Database URI (else MATDX_DB_URI or embedded).")


class DataPolicy(StrictModel):
    """Default data tier and rights for every record the campaign creates."""

    tier: Tier = "open"
    owner: str | None = Field(None, description="Owning project (default: the caller).")
    groups: list[str] = Field(default_factory=list, description="Groups for shared-closed data.")
    rights: str = Field("CC-BY-4.0", description="Licence or rights text.")
    export_control: bool = Field(False, description="Export-controlled data.")


class CampaignSpec(StrictModel):
    """A screening campaign as written in ``workflows/<name>.yaml``."""

    name: str = Field(..., pattern=NAME_PATTERN, description="Unique campaign name.")
    description: str = ""
    seed: int = Field(0, ge=0, description="Seed of every random choice.")
    chemical_space: ChemicalSpace
    prescreen: Prescreen = Field(default_factory=Prescreen)
    targets: list[Target] = Field(
        default_factory=lambda: [
            "energy_per_atom",
            "formation_energy_per_atom",
            "energy_above_hull",
            "volume_per_atom",
            "spacegroup",
        ]
    )
    ranking: Ranking = Field(default_factory=Ranking)
    batch_size: int = Field(50, ge=1, le=10_000, description="Candidates per Firework.")
    max_candidates: int | None = Field(
        None,
        ge=1,
        le=10_000_000,
        description="Compute at most this many unique candidates (a subset drawn with the "
        "seed; elemental references are always kept).",
    )
    steps: list[Step] = Field(
        default_factory=list, max_length=20, description="Calculations after the pre-screen."
    )
    store: StoreSettings = Field(default_factory=StoreSettings)
    data: DataPolicy = Field(default_factory=DataPolicy)

    @field_validator("steps")
    @classmethod
    def _step_inputs(cls, steps: list[Step]) -> list[Step]:
        seen = [PRESCREEN]
        for step in steps:
            if step.name in seen:
                raise ValueError(f"step name {step.name!r} is used twice")
            if step.input is not None and step.input not in seen:
                raise ValueError(
                    f"step {step.name!r}: input {step.input!r} is not an earlier step "
                    f"(earlier: {', '.join(seen)})"
                )
            seen.append(step.name)
        return steps
