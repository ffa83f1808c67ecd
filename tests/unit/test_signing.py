"""Signing the instance id (docs/upstream.md, "Signing"; Neutron's TU test vector)."""

from metaproxy.signing import sign_instance_id


def test_upstream_test_vector():
    """secret 'secret' and id 'foo' give Neutron's and Nova's documented signature."""
    assert sign_instance_id(b"secret", "foo") == (
        "773ba44693c7553d6ee20f61ea5d2757a9a4f4a44d2841ae4e95b52e4cd62db4"
    )


def test_empty_secret_still_signs():
    """An empty secret signs with an empty key, as upstream does (64 hex digits)."""
    signature = sign_instance_id(b"", "foo")
    assert len(signature) == 64 and signature != sign_instance_id(b"secret", "foo")
    assert int(signature, 16) >= 0
