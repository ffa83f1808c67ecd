"""Signing the instance id: known answers worked out outside the code under test.

The fixed signatures were computed with other tools: C{openssl dgst -sha256 -hmac KEY}
for a non-empty secret, and for the empty secret the HMAC construction written out with
C{printf} and coreutils' C{sha256sum} (openssl takes no empty key). The RFC 4231 vector is
the standard's own. L{hmac_sha256_by_hand} is RFC 2104's construction on plain SHA-256,
not the C{hmac} module the code uses.
"""

import hashlib
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metaproxy.signing import sign_instance_id

#: (secret, instance id, X-Instance-ID-Signature)
KNOWN_ANSWERS = [
    # Neutron's and Nova's own test vector
    (b"secret", "foo", "773ba44693c7553d6ee20f61ea5d2757a9a4f4a44d2841ae4e95b52e4cd62db4"),
    # RFC 4231, test case 2
    (
        b"Jefe",
        "what do ya want for nothing?",
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    ),
    # an empty secret signs with an empty key
    (b"", "foo", "0c0d98f7e3d9d45e72e8877bc1b104327efb9c07b18f2ffeced76d81307f1fff"),
    (b"", "", "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad"),
    # a UUID instance id, as Nova's are
    (
        b"metaproxy-shared-secret",
        "7c0e2a4e-7b8f-4f3a-9d2c-5e1b6a9f0c3d",
        "8743f8b2bb780be7d09976dafd8f0917f66769656ac9620760555ee5b7d20300",
    ),
    # a non-ASCII id is signed as UTF-8
    (
        b"secret",
        "i-\u00e9t\u00e9",
        "8bb2e20f8964113cfd89b231f3528645cdabefb17573c06f915a5f0c2a1f5fbc",
    ),
    # a secret longer than SHA-256's 64-byte block is hashed first
    (b"k" * 100, "foo", "95bc3f6a78eb26323e9f7f07ef4f0ae4dfa834cdafdf2ba0dc8765a9559835c9"),
]


def hmac_sha256_by_hand(key: bytes, message: bytes) -> str:
    """HMAC-SHA256 as RFC 2104 defines it, from SHA-256 alone."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key) + message).digest()
    return hashlib.sha256(bytes(b ^ 0x5C for b in key) + inner).hexdigest()


def test_upstream_test_vector():
    """secret 'secret' and id 'foo' give Neutron's and Nova's documented signature."""
    assert sign_instance_id(b"secret", "foo") == (
        "773ba44693c7553d6ee20f61ea5d2757a9a4f4a44d2841ae4e95b52e4cd62db4"
    )


@pytest.mark.parametrize("secret, instance_id, signature", KNOWN_ANSWERS)
def test_known_answers(secret, instance_id, signature):
    assert sign_instance_id(secret, instance_id) == signature


def test_empty_secret_still_signs():
    """An empty secret signs with an empty key, as upstream does, and not as 'secret'."""
    assert sign_instance_id(b"", "foo") == (
        "0c0d98f7e3d9d45e72e8877bc1b104327efb9c07b18f2ffeced76d81307f1fff"
    )
    assert sign_instance_id(b"", "foo") != sign_instance_id(b"secret", "foo")


@pytest.mark.parametrize("secret, instance_id, signature", KNOWN_ANSWERS)
def test_the_hand_written_hmac_gives_the_known_answers(secret, instance_id, signature):
    """The oracle below is right where the answers are known."""
    assert hmac_sha256_by_hand(secret, instance_id.encode("utf-8")) == signature


@given(st.binary(max_size=200), st.text(max_size=80))
def test_signature_is_hmac_sha256_of_the_utf8_id(secret, instance_id):
    """Any secret (empty, short, longer than a block) and id: the RFC 2104 HMAC-SHA256 of
    the id's UTF-8, as 64 lower-case hex digits (Nova compares the text)."""
    signature = sign_instance_id(secret, instance_id)
    assert re.fullmatch("[0-9a-f]{64}", signature)
    assert signature == hmac_sha256_by_hand(secret, instance_id.encode("utf-8"))
