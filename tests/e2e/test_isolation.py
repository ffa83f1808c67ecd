"""From inside an instance, posing as another instance or namespace never works.

Each victim is chosen so that the spoof, if believed, would land on another instance:
an address another instance on the same router or network has, or a router or network
where another instance has the caller's own address (everything is 10.0.0.5).
"""

from __future__ import annotations

import pytest

from tests.e2e.conftest import IDENTITY_PATHS

ROUTER, NETWORK, OVN = "X-Neutron-Router-ID", "X-Neutron-Network-ID", "X-OVN-Network-ID"
XFF = "X-Forwarded-For"

#: The namespace headers haproxy removes or overwrites in each kind of namespace
#: (docs/upstream.md, "Headers haproxy writes": del-header the other ML2 id and
#: set-header its own; OVN: metaproxy's rendering deletes any X-OVN-Network-ID before
#: adding its own).
SCRUBBED = {"router": {ROUTER, NETWORK}, "dhcp": {ROUTER, NETWORK}, "ovn": {OVN}}


def _victims(e2e, variant, name):
    """For the caller C{name}: the spoofed value of each header, aimed at another
    instance."""
    n = lambda key: e2e.net(variant, key)  # noqa: E731
    return {
        # an address another instance has behind the same namespace
        XFF: {"a1": "10.0.1.6", "d": "10.0.0.9", "o": "10.0.0.9"}[name],
        # a router where b has the caller's own address
        ROUTER: n("r2"),
        # a network where another instance has the caller's own address
        NETWORK: {"a1": n("b"), "d": n("b"), "o": n("d")}[name],
        OVN: {"a1": n("o"), "d": n("o"), "o": n("d")}[name],
    }


SPOOFS = {
    "forwarded-for": [XFF],
    "router-id": [ROUTER],
    "network-id": [NETWORK],
    "ovn-network-id": [OVN],
    "all-at-once": [XFF, ROUTER, NETWORK, OVN],
}


def _outcome(variant, kind, headers):
    """What the agent must do: serve the caller itself, or refuse (400) because two
    namespace headers reached the shared socket. Never another instance."""
    if variant == "own":
        return "own"  # the socket says which namespace; headers are ignored
    surviving = {h for h in headers if h != XFF} - SCRUBBED[kind]
    return "refused" if surviving else "own"


@pytest.mark.parametrize("spoof", sorted(SPOOFS))
@pytest.mark.parametrize("name", ["a1", "d", "o"])
def test_posing_as_another_instance_or_namespace(e2e, variant, name, spoof):
    instance = e2e.site(variant).instances[name]
    victims = _victims(e2e, variant, name)
    headers = [(h, victims[h]) for h in SPOOFS[spoof]]
    outcome = _outcome(variant, instance.attached_to.kind, SPOOFS[spoof])
    me = e2e.device_of[instance.namespace]

    e2e.nova_control("reset", "POST")
    report = e2e.client(instance, paths=IDENTITY_PATHS, headers=headers)
    assert report["error"] is None, report["error"]
    assert len(report["requests"]) == len(IDENTITY_PATHS)

    for answer in report["requests"]:
        path, status, body = answer["path"], answer["status"], answer["body"]
        for other in e2e.others(instance):
            assert body != e2e.expected(other, path, instance.ip)[1], (
                f"{instance.name} got {other}'s {path} by sending {headers}"
            )
        if outcome == "own":
            assert (status, body) == e2e.expected(instance, path, instance.ip), (path, status)
        else:
            assert status == 400 and b"Both network" in body, (path, status, body[:200])

    # and Nova was only ever asked about the caller
    asked = {
        dict((k.lower(), v) for k, v in r["headers"]).get("x-instance-id")
        for r in e2e.nova_control("requests")
    }
    assert asked == ({me} if outcome == "own" else set())
