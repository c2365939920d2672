"""OpenID Connect access tokens: identity from a JWT signed by the configured issuer."""

from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from matdx.service.auth import OidcSettings, caller_of_token
from matdx.store.access import Caller
from matdx.store.tokens import TokenError

ISSUER, AUDIENCE = "https://login.example.org/realms/hub", "matdx"


def keypair():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return key, public.decode()


@pytest.fixture(scope="module")
def issuer():
    key, public = keypair()
    return key, OidcSettings(ISSUER, AUDIENCE, public)


def token(key, **claims):
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "u-123", "preferred_username": "carol",
            "groups": ["teamA"], "iat": now, "exp": now + 300, **claims}
    return jwt.encode(body, key, algorithm="RS256")


def test_identity_and_groups_come_from_the_signed_token(issuer):
    key, oidc = issuer
    assert caller_of_token(token(key), oidc) == Caller("carol", ("teamA",))


@pytest.mark.parametrize("bad", [
    {"exp": int(time.time()) - 10},                      # expired
    {"iss": "https://evil.example.org"},                # another issuer
    {"aud": "other-service"},                            # another audience
    {"preferred_username": "anonymous", "sub": "anonymous"},
])
def test_bad_claims_are_refused(issuer, bad):
    key, oidc = issuer
    with pytest.raises(TokenError):
        caller_of_token(token(key, **bad), oidc)


def test_forged_signatures_and_unsigned_tokens_are_refused(issuer):
    _, oidc = issuer
    other, _ = keypair()
    with pytest.raises(TokenError):
        caller_of_token(token(other), oidc)  # signed by someone else
    unsigned = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": 2**31},
                          key=None, algorithm="none")
    with pytest.raises(TokenError):
        caller_of_token(unsigned, oidc)
    with pytest.raises(TokenError):
        caller_of_token(token(issuer[0]), None)  # no issuer configured: API keys only
