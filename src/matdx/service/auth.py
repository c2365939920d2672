"""Who is calling: the identity of a verified bearer token, else anonymous.

Two kinds of token are accepted in ``Authorization: Bearer <token>``:

* an API key issued by ``matdx token issue`` (see :mod:`matdx.store.tokens`);
* an OpenID Connect access token (a JWT) signed by the configured issuer, when the
  service is given the issuer's public key (:class:`OidcSettings`). The user is the
  token's ``sub`` claim (or ``preferred_username``), the groups its ``groups`` claim.

A request without a token reads as ``anonymous`` (open records only). A request with a
token that does not verify is refused (401) rather than served as anonymous, so that a
client notices an expired or revoked key. Nothing a caller sends besides the token
(headers, query parameters, flags) sets an identity.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matdx.store.access import ANONYMOUS, Caller
from matdx.store.tokens import PREFIX, TokenError, verify

ANONYMOUS_CALLER = Caller(ANONYMOUS)
CURRENT: ContextVar[Caller] = ContextVar("matdx_caller", default=ANONYMOUS_CALLER)
"""The caller of the request being served (set by :class:`AuthMiddleware`)."""


@dataclass(frozen=True)
class OidcSettings:
    """How to verify OpenID Connect access tokens.

    Attributes
    ----------
    issuer
        Expected ``iss`` claim.
    audience
        Expected ``aud`` claim.
    public_key
        The issuer's signing key (PEM).
    algorithms
        Accepted signature algorithms (asymmetric only: the service holds no secret).
    groups_claim
        Claim holding the caller's groups.
    """

    issuer: str
    audience: str
    public_key: str
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    groups_claim: str = "groups"

    @classmethod
    def from_files(cls, issuer: str, audience: str, key_file: Path) -> OidcSettings:
        """Settings with the public key read from a PEM file."""
        return cls(issuer, audience, key_file.read_text(encoding="utf-8"))


def caller_of_token(token: str, oidc: OidcSettings | None) -> Caller:
    """The identity of a bearer token.

    Raises
    ------
    TokenError
        If the token does not verify (the reason stays on the server).
    """
    if token.startswith(PREFIX):
        return verify(token)
    if oidc is None:
        raise TokenError("not an API key, and no token issuer is configured")
    import jwt

    try:
        claims = jwt.decode(
            token,
            oidc.public_key,
            algorithms=list(oidc.algorithms),
            audience=oidc.audience,
            issuer=oidc.issuer,
            options={"require": ["exp", "iss", "aud", "sub"]},
        )
    except jwt.PyJWTError as exc:
        raise TokenError(f"token rejected: {type(exc).__name__}") from None
    user = str(claims.get("preferred_username") or claims["sub"])
    groups = claims.get(oidc.groups_claim) or []
    if user == ANONYMOUS or not isinstance(groups, list):
        raise TokenError("token identity unusable")
    return Caller(user, tuple(str(g) for g in groups))


class AuthMiddleware:
    """ASGI middleware: verify the bearer token, set :data:`CURRENT` for the request.

    Plain ASGI (not Starlette's ``BaseHTTPMiddleware``), so the context variable is set in
    the context the endpoints run in, including those run in the thread pool.
    """

    def __init__(self, app: Any, oidc: OidcSettings | None = None) -> None:
        self.app = app
        self.oidc = oidc

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Serve one ASGI request."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers") or ()).get(b"authorization")
        caller = ANONYMOUS_CALLER
        if header is not None:
            scheme, _, token = header.decode("latin-1").partition(" ")
            try:
                if scheme.lower() != "bearer" or not token.strip():
                    raise TokenError("not a bearer token")
                from starlette.concurrency import run_in_threadpool

                caller = await run_in_threadpool(caller_of_token, token.strip(), self.oidc)
            except TokenError:
                await _refuse(send)
                return
        reset = CURRENT.set(caller)
        try:
            await self.app(scope, receive, send)
        finally:
            CURRENT.reset(reset)


async def _refuse(send: Any) -> None:
    body = (
        b'{"errors":[{"status":"401","title":"Unauthorized",'
        b'"detail":"invalid, expired or revoked token"}]}'
    )
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"www-authenticate", b'Bearer realm="matdx"'),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def current_caller() -> Caller:
    """The caller of the request being served."""
    return CURRENT.get()
