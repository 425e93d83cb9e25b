"""The embedded exchange's API keys: CDP-format credentials and ES256 JWT checks.

The venue's Advanced Trade API authenticates each REST request with a bearer JWT signed by
the caller's API key (a P-256 EC key, "CDP" format): the header names the key (``kid``), the
claims name it again (``sub``), bound the token's life (``nbf``, ``exp``, two minutes in both
clients) and name the one request it is for (``uri``: method, host and path). The official SDK
writes ``uri`` as ``"GET 127.0.0.1:8443/api/v3/..."``; ccxt strips only ``https://`` from its
URL, so over plain HTTP it writes ``"GET http://127.0.0.1:8443/api/v3/..."``. The check here
compares method and path only, so both clients pass on either scheme.

Nothing here is module-level state: each server generates its own `ApiCredentials`.
"""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any, final

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["ApiCredentials", "AuthError", "build_jwt", "verify_jwt"]

# Clock skew tolerated on ``nbf`` and ``exp``: the clients stamp their own clocks.
LEEWAY_SECONDS = 5.0
_TOKEN_LIFETIME = 120


class AuthError(ValueError):
    """A request's credentials were missing or wrong: answered 401 with this message."""


@final
@dataclass(frozen=True, slots=True)
class ApiCredentials:
    """One CDP API key: its name and its PEM private key, as both clients take them.

    Args:
        api_key: ``organizations/{uuid}/apiKeys/{uuid}``.
        api_secret: a PEM ``EC PRIVATE KEY`` on P-256.
    """

    api_key: str
    api_secret: str

    def __post_init__(self) -> None:
        if not self.api_key.startswith("organizations/") or "/apiKeys/" not in self.api_key:
            expected = "'organizations/{id}/apiKeys/{id}'"
            raise ValueError(f"api_key must look like {expected}, got {self.api_key!r}")
        key = serialization.load_pem_private_key(self.api_secret.encode(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ValueError("api_secret must be a PEM EC private key on P-256")

    @classmethod
    def generate(cls) -> ApiCredentials:
        """A fresh key with fresh ids (OS randomness: a key must never be replayable)."""
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,  # "BEGIN EC PRIVATE KEY", as CDP
            serialization.NoEncryption(),
        )
        return cls(f"organizations/{uuid.uuid4()}/apiKeys/{uuid.uuid4()}", pem.decode())

    def private_key(self) -> ec.EllipticCurvePrivateKey:
        """The signing key."""
        key = serialization.load_pem_private_key(self.api_secret.encode(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)  # checked when built
        return key


def build_jwt(credentials: ApiCredentials, uri: str | None, *, now: float | None = None) -> str:
    """A token like the clients build: ES256, ``kid``/``sub`` the key name, two minutes.

    Args:
        credentials: the key to sign with.
        uri: ``"METHOD host/path"``; None for a websocket token (no request named).
        now: the issue time in epoch seconds (default: the wall clock).
    """
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "sub": credentials.api_key,
        "iss": "cdp",
        "nbf": issued,
        "exp": issued + _TOKEN_LIFETIME,
    }
    if uri is not None:
        claims["uri"] = uri
    headers = {"kid": credentials.api_key, "nonce": secrets.token_hex()}
    return jwt.encode(claims, credentials.private_key(), algorithm="ES256", headers=headers)


def verify_jwt(
    credentials: ApiCredentials,
    authorization: str | None,
    *,
    method: str | None,
    path: str | None,
) -> None:
    """Check an ``Authorization`` header value (or a bare token) against ``credentials``.

    Args:
        credentials: the only key the server knows.
        authorization: ``"Bearer <jwt>"``, a bare token, or None (missing).
        method: the request's method; None skips the ``uri`` check (websocket tokens).
        path: the request's path without its query.

    Raises:
        AuthError: missing, malformed, forged, signed by another key, expired, not yet
            valid, or issued for another request; the message says which.
    """
    if not authorization:
        raise AuthError("missing Authorization header (expected 'Bearer <JWT>')")
    scheme, _, token = authorization.partition(" ")
    if not token:
        token = scheme
    elif scheme.lower() != "bearer":
        raise AuthError(f"unsupported Authorization scheme {scheme!r}; expected 'Bearer'")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError as err:
        raise AuthError(f"malformed JWT: {err}") from None
    if header.get("kid") != credentials.api_key:
        raise AuthError(f"JWT kid {header.get('kid')!r} is not this server's API key")
    if header.get("alg") != "ES256":
        raise AuthError(f"JWT alg {header.get('alg')!r} is not ES256")
    public = credentials.private_key().public_key()
    try:
        claims = jwt.decode(
            token,
            public,
            algorithms=["ES256"],
            options={"require": ["exp", "nbf", "sub"], "verify_aud": False},
            leeway=LEEWAY_SECONDS,
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("JWT expired") from None
    except jwt.ImmatureSignatureError:
        raise AuthError("JWT not yet valid (nbf in the future)") from None
    except jwt.InvalidSignatureError:
        raise AuthError("JWT signature does not verify with this server's API key") from None
    except jwt.InvalidTokenError as err:
        raise AuthError(f"invalid JWT: {err}") from None
    if claims.get("sub") != credentials.api_key:
        raise AuthError(f"JWT sub {claims.get('sub')!r} is not this server's API key")
    if method is not None:
        _check_uri(claims.get("uri"), method, path or "/")


def _check_uri(uri: object, method: str, path: str) -> None:
    if not isinstance(uri, str):
        raise AuthError(f"JWT uri claim must name the request, got {uri!r}")
    claimed_method, _, target = uri.partition(" ")
    # Host and scheme differ between clients (see the module docstring): compare the path.
    _, _, rest = target.rpartition("://")
    slash = rest.find("/")
    claimed_path = rest[slash:] if slash >= 0 else "/"
    claimed_path = claimed_path.split("?", 1)[0]
    if claimed_method.upper() != method.upper() or claimed_path != path:
        raise AuthError(f"JWT uri {uri!r} does not match this request {method} {path}")
