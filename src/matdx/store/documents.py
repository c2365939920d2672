"""mongoengine documents of the property store.

Every document's ``_id`` is its natural key (campaign name, material id, calculation id,
``<campaign>:<material_id>``): idempotent upserts and lookups then go by ``_id``, which
every MongoDB-wire server serves from its primary index (FerretDB 1.x pushes down no
other filter).

Field names follow the Materials Project (emmet) documents where one exists
(``formula_pretty``, ``chemsys``, ``nsites``, ``symmetry``, ``energy_per_atom``,
``formation_energy_per_atom``, ``energy_above_hull``) and OPTIMADE's (``elements``,
``nelements``). Every record carries a data tier and rights (see :class:`Governed`).

The fields of :class:`SummaryDoc` (and the governance fields) say what they are for with an
:class:`~matdx.store.fields.About`: unit, description, export column, query range or sort,
derived value. :data:`SUMMARY` reads them; query filters and projections, export columns
and the masks of derived values all come from it. A new summary field is declared here
once and written where the analysis computes it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mongoengine import (
    BooleanField,
    DateTimeField,
    DictField,
    Document,
    EmbeddedDocument,
    EmbeddedDocumentField,
    FloatField,
    IntField,
    ListField,
    StringField,
)
from mongoengine.errors import FieldDoesNotExist, ValidationError

from matdx.store.fields import About, FieldList

ALIAS = "matdx"
SCHEMA_VERSION = 4
TIERS = ("open", "shared-closed", "closed")
MAT, GOV, INT = "material", "governance", "internal"


def utcnow() -> datetime:
    """Current time in UTC (naive, as MongoDB stores it)."""
    return datetime.now(UTC).replace(tzinfo=None)


class TierChange(EmbeddedDocument):
    """One entry of the audit trail of tier changes."""

    by = StringField(required=True)
    at = DateTimeField(required=True)
    from_tier = StringField(choices=TIERS)
    to_tier = StringField(choices=TIERS, required=True)


class Governed(Document):
    """Data tier, owner, groups, rights and export control shared by all records."""

    meta = {"abstract": True}

    tier = StringField(
        choices=TIERS,
        default="open",
        required=True,
        about=About("Who may read the record (see TIERS).", kind=GOV, export=True),
    )
    owner = StringField(
        required=True, about=About("Owning user or project.", kind=GOV, export=True)
    )
    groups = ListField(
        StringField(), about=About("Groups or projects reading a shared-closed record.", kind=GOV)
    )
    rights = StringField(
        default="CC-BY-4.0", about=About("Licence or rights text.", kind=GOV, export=True)
    )
    export_control = BooleanField(
        default=False,
        about=About("Export-controlled: exported only on request.", kind=GOV, export=True),
    )
    tier_history = ListField(
        EmbeddedDocumentField(TierChange), about=About("Audit trail of tier changes.", kind=INT)
    )
    schema_version = IntField(default=SCHEMA_VERSION, about=About("Schema version.", kind=INT))


class Symmetry(EmbeddedDocument):
    """Space group of a structure."""

    number = IntField()
    symbol = StringField()
    crystal_system = StringField()
    symprec = FloatField(
        help_text="spglib tolerance: in Å for relaxed structures, a fraction of the mean "
        "atomic spacing for the generated ones (dedup)"
    )


class CampaignDoc(Governed):
    """A campaign as run: its file, sizes and the workflows made for it."""

    meta = {
        "collection": "campaigns",
        "db_alias": ALIAS,
        "auto_create_index": False,
        "indexes": [],
    }

    id = StringField(primary_key=True, help_text="The campaign name.")
    name = StringField(required=True)
    spec = DictField(required=True)
    n_raw = IntField(default=0)
    n_unique = IntField(default=0)
    n_reused = IntField(default=0, help_text="Unique candidates found already stored.")
    wf_ids = ListField(IntField())
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)


class MaterialDoc(Governed):
    """A distinct crystal (the representative of a deduplication group)."""

    meta = {
        "collection": "materials",
        "db_alias": ALIAS,
        "auto_create_index": False,
        "indexes": [
            "fingerprint",
            "chemsys",
            "elements",
            "formula_pretty",
        ],
    }

    id = StringField(primary_key=True, help_text="Same as material_id.")
    material_id = StringField(required=True)
    structure = DictField(required=True)
    formula_pretty = StringField(required=True)
    chemsys = StringField(required=True)
    elements = ListField(StringField(), required=True)
    nelements = IntField(required=True)
    nsites = IntField(required=True)
    symmetry = EmbeddedDocumentField(Symmetry)
    fingerprint = StringField(required=True)
    source = StringField()
    created_at = DateTimeField(default=utcnow)
    # OPTIMADE properties a filter selects on (see matdx.store.optimade)
    chemical_formula_reduced = StringField()
    chemical_formula_anonymous = StringField()
    chemical_formula_descriptive = StringField()
    elements_ratios = ListField(FloatField())
    dimension_types = ListField(IntField())
    nperiodic_dimensions = IntField()
    structure_features = ListField(StringField())


class CampaignMaterialDoc(Document):
    """Membership of a material in a campaign (insert-only link, ``_id`` = campaign:material)."""

    meta = {
        "collection": "campaign_materials",
        "db_alias": ALIAS,
        "auto_create_index": False,
        "indexes": ["campaign", "material_id"],
    }

    id = StringField(primary_key=True)
    campaign = StringField(required=True)
    material_id = StringField(required=True)
    source = StringField(help_text="How the campaign generated it.")
    reused = BooleanField(default=False, help_text="Already stored by an earlier campaign.")
    created_at = DateTimeField(default=utcnow)


class CalculationDoc(Governed):
    """One calculation of one material with one set of settings (idempotency key ``calc_id``)."""

    meta = {
        "collection": "calculations",
        "db_alias": ALIAS,
        "auto_create_index": False,
        "indexes": [
            ("material_id", "settings_hash"),
            ("campaign", "status"),
        ],
    }

    id = StringField(primary_key=True, help_text="Same as calc_id.")
    calc_id = StringField(required=True)
    material_id = StringField(required=True)
    campaign = StringField(required=True)
    engine = StringField(required=True)
    task = StringField(required=True)
    settings = DictField()
    settings_hash = StringField(required=True)
    status = StringField(choices=("completed", "failed"), required=True)
    error = StringField()
    output = DictField()
    provenance = DictField()
    created_at = DateTimeField(default=utcnow)


class SummaryDoc(Governed):
    """Derived properties of a material within a campaign: what results and plots show."""

    meta = {
        "collection": "summaries",
        "db_alias": ALIAS,
        "auto_create_index": False,
        "indexes": [
            ("campaign", "energy_above_hull"),
            ("campaign", "formation_energy_per_atom"),
            ("campaign", "energy_per_atom"),
            "chemsys",
        ],
    }

    id = StringField(primary_key=True, about=About("'<campaign>:<material_id>'", kind=INT))
    campaign = StringField(required=True, about=About("Campaign name.", kind="provenance"))
    material_id = StringField(
        required=True, about=About("Identifier of the material.", kind=MAT, export=True, sort=True)
    )
    formula_pretty = StringField(
        required=True, about=About("Reduced formula.", kind=MAT, export=True, sort=True)
    )
    chemsys = StringField(
        required=True,
        about=About("Chemical system, e.g. Au-Cu.", kind=MAT, export=True, sort=True),
    )
    elements = ListField(
        StringField(), about=About("Element symbols, sorted.", kind=MAT, export=True)
    )
    nelements = IntField(about=About("Number of elements.", kind=MAT, export=True, range=True))
    nsites = IntField(about=About("Sites in the cell.", kind=MAT, export=True, range=True))
    formula_anonymous = StringField(
        about=About("Anonymous formula (A2B for Cu2Au).", kind=MAT, export=True)
    )
    composition = DictField(
        about=About("Element → number of atoms in the cell.", kind=MAT, export=True)
    )
    composition_reduced = DictField(
        about=About("Element → amount in the reduced formula.", kind=MAT, export=True)
    )
    symmetry = EmbeddedDocumentField(
        Symmetry,
        about=About(
            "Space group of the relaxed structure.",
            kind=MAT,
            columns=(
                ("spacegroup_symbol", "symbol"),
                ("spacegroup_number", "number"),
                ("crystal_system", "crystal_system"),
            ),
        ),
    )
    volume = FloatField(
        about=About("Volume of the relaxed cell.", unit="Å³", kind=MAT, export=True, range=True)
    )
    density = FloatField(
        about=About(
            "Mass density of the relaxed cell.", unit="g/cm³", kind=MAT, export=True, range=True
        )
    )
    energy_per_atom = FloatField(
        about=About("Total energy.", unit="eV/atom", export=True, range=True)
    )
    formation_energy_per_atom = FloatField(
        about=About(
            "Formation energy from the elemental references.",
            unit="eV/atom",
            export=True,
            range=True,
            derived=True,
        )
    )
    energy_above_hull = FloatField(
        about=About(
            "Distance to the convex hull of the campaign's phases.",
            unit="eV/atom",
            export=True,
            range=True,
            derived=True,
        )
    )
    is_stable = BooleanField(about=About("On the hull.", export=True, derived=True))
    converged = BooleanField(
        about=About("The relaxation met its force (and stress) threshold.", export=True)
    )
    volume_per_atom = FloatField(
        about=About("Volume of the relaxed cell.", unit="Å³/atom", export=True, range=True)
    )
    decomposes_to = ListField(
        DictField(),
        about=About(
            "Stable phases an unstable material decomposes to: material_id, formula and "
            "amount (share of the atoms).",
            export=True,
            derived=True,
        ),
    )
    method = DictField(
        about=About(
            "engine, settings_hash, units.",
            kind="provenance",
            columns=(("engine", "engine"), ("settings_hash", "settings_hash")),
        )
    )
    derived_access = ListField(
        DictField(),
        about=About(
            "Governance (tier, owner, groups) of every record the derived values "
            "(formation energy, hull) were computed from.",
            kind=GOV,
        ),
    )
    steps = DictField(
        about=About(
            "Results of the campaign's later steps by step name: energy_per_atom, "
            "formation_energy_per_atom, energy_above_hull (eV/atom, the step's own hull), "
            "engine, task, calc_id, and per task phonon or MD values."
        )
    )
    updated_at = DateTimeField(
        default=utcnow,
        about=About(
            "Last change of the record (UTC).",
            kind="provenance",
            export=True,
            column="last_updated",
        ),
    )


def document_fields(doc_cls: type[Document], data: dict[str, Any]) -> dict[str, Any]:
    """Validate ``data`` against a document class's fields; return its database form.

    The same as ``doc_cls(**data).validate()`` then ``to_mongo()`` (each field converts,
    validates and encodes its value; defaults and required fields as in the document;
    unknown fields and invalid values raise mongoengine's own errors), without building
    the document object, which costs most of the time in bulk writes (22 against 84 µs
    for a calculation record).
    """
    fields = doc_cls._fields
    unknown = set(data) - set(fields)
    if unknown:
        raise FieldDoesNotExist(
            f"The fields {sorted(unknown)} do not exist on the document {doc_cls.__name__}"
        )
    out: dict[str, Any] = {}
    errors: dict[str, ValidationError] = {}
    for name, field in fields.items():
        value = data.get(name)
        if value is None:
            value = field.default() if callable(field.default) else field.default
        if value is None:
            if field.required:
                errors[name] = ValidationError("Field is required", field_name=name)
            continue
        value = field.to_python(value)
        try:
            field._validate(value)
        except ValidationError as exc:
            errors[name] = exc
            continue
        out[field.db_field] = field.to_mongo(value)
    if errors:
        pk = data.get("id")
        raise ValidationError(f"ValidationError ({doc_cls.__name__}:{pk}) ", errors=errors)
    return out


ALL_DOCUMENTS = (CampaignDoc, MaterialDoc, CampaignMaterialDoc, CalculationDoc, SummaryDoc)

SUMMARY = FieldList(SummaryDoc)
"""The summary's fields: what queries select and return, exports write and masks hide."""
