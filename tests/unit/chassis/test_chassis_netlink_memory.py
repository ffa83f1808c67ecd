"""pyroute2's closed IPRoutes are collected as the provisioning goes (their cyclic
garbage would otherwise spread over the object arenas): a young-generation collection
after every tenth."""

from __future__ import annotations

import types

from metaproxy.chassis import netlink


class FakeRoute:
    opened = 0
    closed = 0

    def __enter__(self):
        FakeRoute.opened += 1
        return self

    def __exit__(self, *exc):
        FakeRoute.closed += 1
        return False


def test_every_tenth_route_closed_is_followed_by_a_young_collection(monkeypatch):
    collections = []
    monkeypatch.setattr(netlink.gc, "collect", lambda generation=2: collections.append(generation))
    monkeypatch.setattr(netlink, "_routes_closed", iter(range(1, 100)))
    fake = types.SimpleNamespace(IPRoute=FakeRoute)
    before = FakeRoute.closed
    for _ in range(25):
        with netlink._route(fake) as ipr:
            assert isinstance(ipr, FakeRoute)
    assert FakeRoute.closed - before == 25
    assert collections == [1, 1]


def test_a_route_that_fails_is_closed_and_counted(monkeypatch):
    collections = []
    monkeypatch.setattr(netlink.gc, "collect", lambda generation=2: collections.append(generation))
    monkeypatch.setattr(netlink, "_routes_closed", iter(range(10, 100)))
    fake = types.SimpleNamespace(IPRoute=FakeRoute)
    before = FakeRoute.closed
    try:
        with netlink._route(fake):
            raise OSError("netlink said no")
    except OSError as e:
        assert str(e) == "netlink said no"
    assert FakeRoute.closed - before == 1
    assert collections == [1]
