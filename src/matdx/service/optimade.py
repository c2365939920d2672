"""The OPTIMADE API of the data service, built on the ``optimade`` package's server.

The ``optimade`` package provides the application (endpoints, query parameters, the
filter grammar and its MongoDB transformer, response models, errors). matdx adds one
thing, the tier boundary: :class:`TieredMaterials` serves the ``materials`` collection
and adds the caller's tier filter to every query, so a filter, a count, a page or a
single entry never includes a record the caller may not read (an invisible entry is a
404 like a missing one). :class:`MaterialMapper` turns a material record into a
``structures`` entry (site arrays from the stored structure, ``_matdx_`` properties).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from optimade.models import StructureResource
from optimade.server.config import ServerConfig
from optimade.server.entry_collections.mongo import MongoCollection
from optimade.server.mappers import StructureMapper

from matdx.service.auth import current_caller
from matdx.store.codec import unpack
from matdx.store.documents import MaterialDoc
from matdx.store.optimade import SITE_FIELDS, site_attributes

PREFIX = "matdx"
PROVIDER_FIELDS = ("tier", "rights", "owner", "source", "formula_pretty", "chemsys")
"""Material record fields served as ``_matdx_<name>`` properties."""
_STANDARD = set(StructureResource.model_fields["attributes"].annotation.model_fields)  # type: ignore[union-attr]


class MaterialMapper(StructureMapper):
    """A ``materials`` record as an OPTIMADE ``structures`` entry."""

    ALIASES = (("id", "material_id"), ("last_modified", "created_at"))

    def map_back(self, doc: dict[str, Any]) -> dict[str, Any]:
        """The entry of a record: site arrays from its structure; only served fields."""
        out = {k: v for k, v in doc.items() if k in _STANDARD or k in _SERVED_REALS}
        structure = doc.get("structure")
        if structure is not None:
            out.update(site_attributes(unpack(structure)))
        when = doc.get("created_at")
        if isinstance(when, datetime) and when.tzinfo is None:
            out["created_at"] = when.replace(tzinfo=UTC)
        return super().map_back(out)


_SERVED_REALS = {"material_id", "created_at", *PROVIDER_FIELDS}


class TieredMaterials(MongoCollection):
    """The ``materials`` collection as seen by the current caller."""

    def handle_query_params(self, params: Any) -> dict[str, Any]:
        """The optimade package's criteria, projecting the structure for the site arrays."""
        criteria = super().handle_query_params(params)
        projection = criteria["projection"]
        if any(projection.pop(f, None) for f in SITE_FIELDS):
            projection["structure"] = True
        return criteria

    def _run_db_query(
        self, criteria: dict[str, Any], single_entry: bool = False
    ) -> tuple[list[dict[str, Any]], int | None, bool]:
        visible = current_caller().tier_filter()
        flt = criteria.get("filter") or {}
        criteria = {**criteria, "filter": {"$and": [flt, visible]} if flt else visible}
        return super()._run_db_query(criteria, single_entry)

    def __len__(self) -> int:
        """Number of entries the current caller may read."""
        return self.collection.count_documents(current_caller().tier_filter())


def optimade_config(db_name: str, base_url: str | None) -> ServerConfig:
    """The ``optimade`` server configuration of the service.

    It names no server: the collections are handed over already connected
    (:func:`optimade_app`), so the package never holds, logs or prints the credentials.
    """
    return ServerConfig(
        debug=False,
        insert_test_data=False,
        database_backend="mongodb",
        mongo_uri="mongodb://localhost:1/",  # never connected to
        mongo_database=db_name,
        structures_collection=MaterialDoc._meta["collection"],
        links_collection="optimade_links",
        references_collection="optimade_references",
        base_url=base_url,
        page_limit=20,
        page_limit_max=1000,
        provider={
            "prefix": PREFIX,
            "name": "matdx",
            "description": "High-throughput materials screening results (matdx data service)",
            "homepage": None,
        },
        provider_fields={"structures": list(PROVIDER_FIELDS)},
        implementation={"name": "matdx", "source_url": None},
        validate_api_response=True,
        log_level="warning",
    )


def optimade_app(database: Any, base_url: str | None) -> Any:
    """The OPTIMADE application (to be mounted at ``/optimade``).

    Parameters
    ----------
    database
        The store's database (a connected ``pymongo`` database).
    base_url
        Public URL of the OPTIMADE API (for pagination links).
    """
    from optimade.server.create_app import create_app

    config = optimade_config(database.name, base_url)
    app = create_app(config)
    collections = app.state.entry_collections
    collections["structures"] = TieredMaterials(
        name=config.structures_collection,
        resource_cls=StructureResource,
        resource_mapper=MaterialMapper(config),
        config=config,
    )
    for entry in collections.values():
        entry.collection = database[entry.collection.name]
    return app
