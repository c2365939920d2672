"""Records of active-learning picks (``matdx campaign next``): what was chosen, and why.

A pick record names the campaign, the acquisition strategy, the model with the identifier
of its training data (``snapshot_id``) and its cross-validated error, and every picked
material with its predicted mean and spread. It carries the campaign's tier and rights
(like every record) and is read through the caller's tier filter.

The collection is looked up in the ``matdx`` connection's current database every time
(:meth:`PickDoc._get_collection` caches nothing), so it follows reconnections to another
database without being listed in :data:`matdx.store.documents.ALL_DOCUMENTS`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from mongoengine import DateTimeField, DictField, FloatField, IntField, ListField, StringField
from mongoengine.connection import get_db

from matdx.store.access import Caller
from matdx.store.bulk import insert_new
from matdx.store.codec import pack, unpack
from matdx.store.documents import ALIAS, Governed, utcnow


class PickDoc(Governed):
    """One choice of what to compute next: model, strategy and the picked materials."""

    meta: ClassVar[dict[str, Any]] = {
        "collection": "picks",
        "db_alias": ALIAS,
        "auto_create_index": False,
        "indexes": [],
    }

    id = StringField(primary_key=True, help_text="The pick id.")
    campaign = StringField(required=True)
    strategy = StringField(required=True)
    kappa = FloatField(help_text="Weight of the uncertainty (ucb).")
    seed = IntField()
    budget = IntField(required=True)
    target = StringField(required=True, help_text="Modelled column.")
    snapshot_id = StringField(required=True, help_text="Identifier of the training data.")
    cv_mae = FloatField(help_text="Cross-validated MAE of the model (target units).")
    model = DictField(help_text="Model name, parameters and training metadata.")
    n_train = IntField(help_text="Results the model was trained on.")
    n_unique = IntField(help_text="Unique candidates of the whole chemical space.")
    n_done = IntField(help_text="Candidates computed before the pick.")
    n_queued = IntField(help_text="Candidates queued before the pick.")
    n_pool = IntField(help_text="Candidates the model ranked.")
    picks = ListField(
        DictField(),
        help_text="Picked materials, best first: material_id, formula_pretty, rank, "
        "predicted_mean and predicted_std of the target, predicted_hull_distance.",
    )
    wf_id = IntField(help_text="Workflow that computes the picks.")
    by = StringField(help_text="Who asked.")
    created_at = DateTimeField(default=utcnow)

    @classmethod
    def _get_collection(cls) -> Any:
        """The collection in the current database (never one cached from an old connection)."""
        return collection()


def collection() -> Any:
    """The ``picks`` collection of the connected database."""
    return get_db(ALIAS)[PickDoc._meta["collection"]]


def add_pick(record: dict[str, Any]) -> bool:
    """Validate and store a pick record (insert-only, keyed by its ``id``).

    Parameters
    ----------
    record
        Fields of :class:`PickDoc`, including ``id`` and the governance fields.

    Returns
    -------
    bool
        Whether the record was new.
    """
    doc = PickDoc(**record)
    doc.validate()
    return insert_new(collection(), [pack(doc.to_mongo().to_dict())]) == 1


def picks(campaign: str, caller: Caller) -> list[dict[str, Any]]:
    """A campaign's pick records that ``caller`` may read, oldest first."""
    flt = {"$and": [{"campaign": campaign}, caller.tier_filter()]}
    docs = [unpack(d) for d in collection().find(flt)]
    return sorted(docs, key=lambda d: (str(d.get("created_at")), d["_id"]))


__all__ = ["PickDoc", "add_pick", "collection", "picks"]
