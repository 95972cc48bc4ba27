"""Scanner API keys as values: the secret token and its stored digest (the device patterns a key may
send for are domain/devices.py).

A key is 32 random bytes (256 bits), so a plain SHA-256 digest is as good as a slow password hash:
there is nothing to guess. Only the digest is stored; the secret is shown once, at creation.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from barcode_pipeline.errors import ConfigError

KEY_PREFIX = "bpk_"  # makes a leaked key recognisable to secret scanners and in a support ticket
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def digest(secret: str | bytes) -> str:
    """What is stored and looked up: the SHA-256 hex digest of the key."""
    raw = secret.encode() if isinstance(secret, str) else secret
    return hashlib.sha256(raw).hexdigest()


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ConfigError(f"key name must be 1-64 of [A-Za-z0-9._-], got {name!r}")
    return name


def client_headers(api_key: str) -> dict[str, str]:
    """The header a client sends its key in (none for an empty key: auth off or a trusted network)."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}
