"""Signing the instance id for Nova: hex HMAC-SHA256 with the shared secret."""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["sign_instance_id"]


def sign_instance_id(secret: bytes, instance_id: str) -> str:
    """Return C{X-Instance-ID-Signature} for C{instance_id}: 64 lower-case hex digits.

    Nova computes the same HMAC-SHA256 of the UTF-8 instance id keyed with its
    C{[neutron] metadata_proxy_shared_secret}; an empty secret still signs (empty key),
    as upstream does.
    """
    return hmac.new(secret, instance_id.encode("utf-8"), hashlib.sha256).hexdigest()
