"""The data service: the only holder of the database credentials, serving tiered reads.

Endpoints (every one answers with what the verified caller may read; a record the caller
may not read is answered exactly like a missing one):

``GET /v1/whoami``
    The identity the token stands for.
``GET /v1/campaigns``
    Campaigns the caller may read (name, tier, owner, counts).
``GET /v1/campaigns/{name}``
    One campaign with its campaign file.
``GET /v1/campaigns/{name}/results``
    Its results (summaries), sorted and paginated.
``POST /v1/query``
    A :class:`~matdx.store.query.MaterialQuery` across campaigns, paginated by ``skip`` or
    by ``after`` (the last ``material_id`` of the previous page, for long reads).
``GET /v1/materials``
    Stored materials with their structures, for long reads: each page continues the
    previous page's database cursor (:mod:`matdx.service.pages`).
``POST /v1/campaigns/{name}/tier``
    Change tier, groups, rights, owner or export control (owners only); the audit trail
    records the token's identity.
``/optimade/...``
    The OPTIMADE API (:mod:`matdx.service.optimade`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from matdx.core.errors import InputError, MatdxError, UnknownCampaignError
from matdx.service.auth import AuthMiddleware, OidcSettings, current_caller
from matdx.service.optimade import optimade_app
from matdx.service.pages import Cursors

HIDDEN_FIELDS = ("derived_access", "tier_history", "schema_version", "_id")
"""Internal fields never served."""
MAX_PAGE = 5000
MATERIAL_FIELDS = (
    "material_id",
    "formula_pretty",
    "chemsys",
    "elements",
    "nelements",
    "nsites",
    "symmetry",
    "structure",
    "source",
    "tier",
    "owner",
    "rights",
    "export_control",
    "created_at",
)
"""Fields of ``/v1/materials`` rows."""


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in HIDDEN_FIELDS}


def create_service(
    db_uri: str, base_url: str | None = None, oidc: OidcSettings | None = None
) -> Any:
    """The service's ASGI application.

    Parameters
    ----------
    db_uri
        The database (a ``mongodb://`` URI with the service's own credentials).
    base_url
        Public URL of the service (for OPTIMADE pagination links), e.g.
        ``https://data.example.org``; default: taken from each request.
    oidc
        How to verify OpenID Connect tokens; ``None`` accepts API keys only.
    """
    from fastapi import Body, FastAPI, Request
    from fastapi.responses import JSONResponse, Response

    from matdx import __version__
    from matdx.store import query as q
    from matdx.store.codec import unpack
    from matdx.store.documents import MaterialDoc
    from matdx.store.governance import set_tier
    from matdx.workflows.context import open_store

    store, backend = open_store(db_uri)
    if backend.target.kind != "mongodb":
        raise InputError("the data service needs a MongoDB server (a mongodb:// URI)")
    app = FastAPI(
        title="matdx data service",
        version=__version__,
        docs_url="/v1/docs",
        openapi_url="/v1/openapi.json",
        redoc_url=None,
    )

    @app.exception_handler(MatdxError)
    async def _matdx_error(_request: Request, exc: MatdxError) -> JSONResponse:
        status = 404 if isinstance(exc, UnknownCampaignError) else 400
        return JSONResponse({"error": str(exc)}, status_code=status)

    @app.get("/v1/whoami")
    def whoami() -> dict[str, Any]:
        c = current_caller()
        return {"user": c.user, "groups": list(c.groups)}

    @app.get("/v1/campaigns")
    def campaigns() -> dict[str, Any]:
        from matdx.store.documents import CampaignDoc

        coll = CampaignDoc._get_collection()
        fields = {"tier": 1, "owner": 1, "rights": 1, "n_raw": 1, "n_unique": 1, "n_reused": 1}
        rows = [
            {"name": d.pop("_id"), **d}
            for d in coll.find(current_caller().tier_filter(), fields).sort("_id", 1)
        ]
        return {"data": rows}

    @app.get("/v1/campaigns/{name}")
    def campaign(name: str) -> dict[str, Any]:
        doc = store.campaign(name, current_caller())
        data = doc.to_mongo().to_dict()
        data["name"] = data.pop("_id")
        return {"data": _public(data)}

    @app.get("/v1/campaigns/{name}/results")
    def results(
        name: str, sort: str | None = None, ascending: bool = True, limit: int = 0, skip: int = 0
    ) -> dict[str, Any]:
        caller = current_caller()
        store.campaign(name, caller)
        mq = q.parse_query(
            {"campaign": name, "sort": sort, "ascending": ascending, "limit": limit, "skip": skip}
        )
        rows = [_public(r) for r in q.run_query(mq, caller)]
        return {"data": rows, "meta": {"data_returned": len(rows)}}

    @app.post("/v1/query")
    def query(body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        spec = dict(body)
        after = spec.pop("after", None)
        if after is not None and not isinstance(after, str):
            raise InputError("bad query, field after: the next_after of the previous page")
        mq = q.parse_query(spec)
        if after is not None and (mq.sort or mq.skip):
            raise InputError("bad query, field after: not with sort or skip")
        limit = mq.limit or MAX_PAGE
        if limit > MAX_PAGE:
            raise InputError(f"bad query, field limit: at most {MAX_PAGE} per page")
        page = mq.model_copy(update={"limit": limit})
        data = [_public(r) for r in q.run_query(page, current_caller(), after=after)]
        more = len(data) == limit
        last = data[-1] if data and more and after is not None else None
        return {
            "data": data,
            "meta": {
                "data_returned": len(data),
                "more_data_available": more,
                "next_after": q.summary_key(last) if last else None,
            },
        }

    cursors = Cursors()
    materials = MaterialDoc._get_collection()
    fields = {k: 1 for k in MATERIAL_FIELDS}

    @app.get("/v1/materials")
    def materials_page(page_size: int = 1000, page_token: str | None = None) -> Response:
        """Stored materials with their structures, in pages that continue one read."""
        if not 1 <= page_size <= MAX_PAGE:
            raise InputError(f"bad page_size {page_size}: 1 to {MAX_PAGE}")
        caller = current_caller()

        def open_rows(after: str) -> Iterator[dict[str, Any]]:
            flt = caller.tier_filter()
            if after:
                flt = {"$and": [flt, {"_id": {"$gt": after}}]}
            cursor = materials.find(flt, fields).sort("_id", 1).batch_size(page_size)
            return (unpack(d) for d in cursor)

        rows, token = cursors.page(caller, page_token, page_size, open_rows, lambda r: r["_id"])
        for r in rows:
            r.pop("_id")
        body = {"data": rows, "meta": {"data_returned": len(rows), "next_page_token": token}}
        return Response(json.dumps(body, default=str), media_type="application/json")

    @app.post("/v1/query/count")
    def count(body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        return {"count": q.count(q.parse_query(body), current_caller())}

    @app.post("/v1/campaigns/{name}/tier")
    def change_tier(name: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        allowed = {"tier", "owner", "groups", "rights", "export_control"}
        unknown = set(body) - allowed
        if unknown or "tier" not in body:
            raise InputError(f"give tier and optionally {', '.join(sorted(allowed - {'tier'}))}")
        changed = set_tier(current_caller(), campaign=name, **body)
        return {"changed": changed}

    public = base_url.rstrip("/") + "/optimade" if base_url else None
    app.mount("/optimade", optimade_app(store.collection("materials").database, public))
    app.add_middleware(AuthMiddleware, oidc=oidc)
    return app
