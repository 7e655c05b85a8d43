"""Who is asking the bridge: API keys, the tenant each belongs to, and how a request presents its key.

Shared by the WebSocket side (:mod:`streams.bridge.server`) and the OpenAI-compatible API
(:mod:`streams.bridge.openai_api`), so both front doors accept and refuse keys the same way.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit


def parse_api_keys(spec: str) -> dict[str, str]:
    """``key:tenant,key:tenant`` -> {key: tenant}; a malformed pair fails start-up rather than locking users out."""
    keys: dict[str, str] = {}
    for pair in filter(None, (part.strip() for part in spec.split(","))):
        key, sep, tenant = pair.partition(":")
        if not sep or not key or not tenant:
            raise ValueError(f"api_keys: expected key:tenant, got {pair.split(':')[0][:4]}...")
        keys[key] = tenant
    return keys


@dataclass(frozen=True)
class Caller:
    """Who is asking: the tenant their API key belongs to, and the key's digest (quotas count per key)."""

    tenant: str
    key: str


class AmbiguousCredentials(ValueError):
    """More than one ``Authorization`` header: refused with 400 rather than guessing which one counts."""


def authorization_header(headers: Any) -> str:
    """The request's one ``Authorization`` header ("" when absent)."""
    values = headers.getall("Authorization", [])
    if len(values) > 1:
        raise AmbiguousCredentials("send one Authorization header, not several")
    return str(values[0]) if values else ""


def request_api_key(authorization: str, url: str) -> str | None:
    """The key from an ``Authorization: Bearer <key>`` header, else from ``?api_key=`` in the request URL (browsers
    cannot set headers on a WebSocket)."""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    values = parse_qs(urlsplit(url).query).get("api_key")
    return values[0] if values else None


def key_id(api_key: str) -> str:
    """The name a key goes by in Redis, logs and metrics: a digest, never the key."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]


class KeyRing:
    """The configured API keys (``key:tenant,...``) and the caller each one identifies."""

    def __init__(self, spec: str) -> None:
        self.keys = parse_api_keys(spec)

    def caller_for(self, authorization: str, url: str) -> Caller | None:
        """Who offers this API key (header or ``?api_key=``), or None for a missing or unknown key."""
        offered = request_api_key(authorization, url)
        if offered is None:
            return None
        tenant = None
        for key, owner in self.keys.items():  # constant-time per key: no timing hints about valid keys
            if hmac.compare_digest(key.encode(), offered.encode()):
                tenant = owner
        return Caller(tenant, key_id(offered)) if tenant is not None else None
