"""Python client of the data service (``matdx serve``): results as DataFrames, by token.

The client holds a service URL and a token, never database credentials::

    from matdx.client import Client

    c = Client()  # MATDX_API_URL and MATDX_TOKEN from the environment
    df = c.query(elements_all=["Cu", "Au"], ranges={"energy_above_hull": {"max": 0.05}})

What comes back is what the token's identity may read; without a token, open data only.
Long reads are paginated by key (``after``), so every page costs the same.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from matdx.core.errors import AuthError, InputError, StoreUnavailableError, UnknownCampaignError

PAGE = 1000
"""Rows per request of :meth:`Client.rows`."""


class Client:
    """A connection to a matdx data service.

    Parameters
    ----------
    url
        Service URL (default ``MATDX_API_URL``).
    token
        API key or OIDC access token (default ``MATDX_TOKEN``; none: anonymous).
    timeout
        Seconds per request.
    transport
        An ``httpx`` transport (tests pass the application's own).
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        timeout: float = 60.0,
        transport: Any = None,
    ) -> None:
        import httpx

        url = url or os.environ.get("MATDX_API_URL")
        if not url:
            raise InputError("no data service URL: set MATDX_API_URL or pass url=")
        token = token if token is not None else os.environ.get("MATDX_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            r = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise StoreUnavailableError(
                f"cannot reach the data service at {self.url}: {type(exc).__name__}"
            ) from None
        if r.status_code == 401:
            raise AuthError("the data service refused the token (invalid, expired or revoked)")
        try:
            body = r.json()
        except ValueError:
            body = {}
        if r.status_code == 404:
            raise UnknownCampaignError(body.get("error") or f"not found: {path}")
        if r.status_code >= 400:
            raise InputError(body.get("error") or _detail(body) or f"HTTP {r.status_code}")
        return body

    # --- identity and campaigns --------------------------------------------------------
    def whoami(self) -> dict[str, Any]:
        """The identity the service gives this client's token."""
        return self._call("GET", "/v1/whoami")

    def campaigns(self) -> list[dict[str, Any]]:
        """Campaigns this client may read."""
        return self._call("GET", "/v1/campaigns")["data"]

    def campaign(self, name: str) -> dict[str, Any]:
        """One campaign, with its campaign file (``spec``)."""
        return self._call("GET", f"/v1/campaigns/{name}")["data"]

    # --- results -----------------------------------------------------------------------
    def result_rows(
        self, campaign: str, sort: str | None = None, ascending: bool = True, limit: int = 0
    ) -> list[dict[str, Any]]:
        """A campaign's results (summaries) as dicts, as the CLI's ``results`` shows them."""
        params: dict[str, Any] = {"ascending": ascending, "limit": limit}
        if sort:
            params["sort"] = sort
        return self._call("GET", f"/v1/campaigns/{campaign}/results", params=params)["data"]

    def rows(self, page: int = PAGE, **query: Any) -> Iterator[dict[str, Any]]:
        """Every result matching a query (see :class:`matdx.store.query.MaterialQuery`).

        Without ``sort``/``skip``, pages follow the service's ``next_after`` key; with them,
        one request (``limit`` rows at most).
        """
        if query.get("sort") or query.get("skip"):
            yield from self._call("POST", "/v1/query", json=query)["data"]
            return
        total = query.pop("limit", 0) or None
        after = ""
        served = 0
        while True:
            size = page if total is None else min(page, total - served)
            body = self._call("POST", "/v1/query", json={**query, "limit": size, "after": after})
            yield from body["data"]
            served += len(body["data"])
            after = body["meta"]["next_after"]
            if not after or (total is not None and served >= total):
                return

    def count(self, **query: Any) -> int:
        """Number of results of a query that this client may read."""
        return int(self._call("POST", "/v1/query/count", json=query)["count"])

    def query(self, page: int = PAGE, **query: Any) -> Any:
        """Results of a query as a pandas DataFrame (one row per result, flat columns)."""
        import pandas as pd

        return pd.json_normalize(list(self.rows(page=page, **query)), max_level=1)

    def results(self, campaign: str, **kwargs: Any) -> Any:
        """A campaign's results as a pandas DataFrame."""
        import pandas as pd

        return pd.json_normalize(self.result_rows(campaign, **kwargs), max_level=1)

    def materials(self, page: int = PAGE) -> Iterator[dict[str, Any]]:
        """Every stored material this client may read, with its structure (pymatgen dict)."""
        token = None
        while True:
            params = {"page_size": page, **({"page_token": token} if token else {})}
            body = self._call("GET", "/v1/materials", params=params)
            yield from body["data"]
            token = body["meta"]["next_page_token"]
            if not token:
                return

    # --- OPTIMADE -----------------------------------------------------------------------
    def structures(
        self, filter: str | None = None, response_fields: str | None = None, page_limit: int = 100
    ) -> Iterator[dict[str, Any]]:
        """OPTIMADE ``structures`` entries matching a filter, following the pages."""
        params: dict[str, Any] | None = {"page_limit": page_limit}
        if filter:
            params["filter"] = filter
        if response_fields:
            params["response_fields"] = response_fields
        path: str | None = "/optimade/v1/structures"
        while path:
            body = self._call("GET", path, params=params)
            yield from body.get("data") or []
            nxt = (body.get("links") or {}).get("next")
            nxt = nxt.get("href") if isinstance(nxt, dict) else nxt
            # the next link carries the query (an empty params would drop it)
            path, params = (nxt.removeprefix(self.url), None) if nxt else (None, None)

    # --- governance ---------------------------------------------------------------------
    def set_tier(self, campaign: str, tier: str, **changes: Any) -> dict[str, int]:
        """Change a campaign's tier and rights (owners only; recorded under this identity)."""
        body = self._call("POST", f"/v1/campaigns/{campaign}/tier", json={"tier": tier, **changes})
        return body["changed"]

    def close(self) -> None:
        """Close the connection."""
        self._http.close()


def _detail(body: dict[str, Any]) -> str | None:
    errors = body.get("errors") or []
    if errors and isinstance(errors[0], dict):
        return str(errors[0].get("detail") or errors[0].get("title"))
    detail = body.get("detail")
    if isinstance(detail, list) and detail:
        return str(detail[0].get("msg"))
    return str(detail) if detail else None


def from_environment() -> Client | None:
    """A client for ``MATDX_API_URL`` (with ``MATDX_TOKEN``), or ``None`` when it is unset."""
    return Client() if os.environ.get("MATDX_API_URL") else None


__all__ = ["Client", "from_environment"]
