"""The router watcher (L{RouterWatch}) on a directory of its own, a fake inotify, a fake
clock and a fake listener set: which namespaces it listens in, how soon, retries and
their log lines, namespaces that go or come back under the same name, and stopping.

The namespaces are plain files here; their "inode" is the file's. Real namespaces, the
address on the loopback and the L3 agent's rules are tests/e2e/test_routers.py.
"""

from __future__ import annotations

import os

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import formatEvent

from metaproxy.agent.router_watch import FIRST_RETRY, QUIET_FAILURES, SETTLE, RouterWatch
from metaproxy.http.listeners import ListenAddress, ListenError
from metaproxy.namespace import Namespace

R1, R2, R3 = (Namespace.parse(f"qrouter-r{i}") for i in (1, 2, 3))
METADATA = ListenAddress("169.254.169.254", 80)
NOT_YET = "cannot enter network namespace {}: /run/netns/{} is not a network namespace"


class FakeListeners:
    """add_tcp runs the prepare hook (as the opener's thread would) and answers at once,
    or holds its answer until the test gives it (C{hold}); failures come from
    C{errors}, a list of messages per namespace, consumed one per try."""

    def __init__(self) -> None:
        self.adds: list[tuple[Namespace, tuple]] = []
        self.removes: list[Namespace] = []
        self.hold = False
        self.held: dict[Namespace, tuple[Deferred, object]] = {}
        self.errors: dict[Namespace, list[str]] = {}

    def add_tcp(self, namespace, addresses, *, prepare=None):
        self.adds.append((namespace, tuple(addresses)))
        pending = self.errors.get(namespace)
        if pending:
            return fail(ListenError(pending.pop(0)))
        if self.hold:
            d = Deferred()
            self.held[namespace] = (d, prepare)
            return d
        prepare()
        return succeed(None)

    def release(self, namespace, *, prepare=True) -> None:
        d, hook = self.held.pop(namespace)
        if prepare:
            hook()
        d.callback(None)

    def remove_tcp(self, namespace):
        self.removes.append(namespace)
        return succeed(None)

    def added(self) -> list[Namespace]:
        return [namespace for namespace, _ in self.adds]


class FakeINotify:
    """Twisted's INotify as the watcher uses it; the test calls L{event}."""

    made: list[FakeINotify] = []

    def __init__(self, reactor) -> None:
        self.watches = []
        self.reading = False
        self.lost = False
        FakeINotify.made.append(self)

    def startReading(self):  # noqa: N802 (Twisted's name)
        self.reading = True

    def watch(self, path, mask, callbacks):
        self.watches.append((path, mask, callbacks))

    def loseConnection(self):  # noqa: N802 (Twisted's name)
        self.lost = True

    def event(self, name: str) -> None:
        for path, _mask, callbacks in self.watches:
            for callback in callbacks:
                callback(None, path.child(name), 0x100)


@pytest.fixture
def netns(tmp_path):
    directory = tmp_path / "netns"
    directory.mkdir()
    return directory


def add(directory, *names):
    for name in names:
        (directory / name).write_text("")


def watcher(directory, listeners, clock, *, inotify=True, **kwargs):
    FakeINotify.made = []
    return RouterWatch(
        clock,
        listeners,
        netns_dir=str(directory),
        rescan_interval=10.0,
        inotify=FakeINotify if inotify else None,
        ensure=lambda name: os.stat(directory / name).st_ino,
        **kwargs,
    )


def messages(logged) -> list[str]:
    return [formatEvent(e) for e in logged]


def test_every_router_namespace_is_listened_in_at_start(netns, logged):
    """Routers only, on 169.254.169.254:80: other kinds of namespace are someone else's."""
    add(netns, "qrouter-r1", "qrouter-r2", "qdhcp-n1", "ovnmeta-n2", "snat-r1", "mpe2e-x")
    listeners, clock = FakeListeners(), Clock()
    watch = watcher(netns, listeners, clock)
    watch.startService()
    assert sorted(listeners.added(), key=str) == [R1, R2]
    assert {addresses for _, addresses in listeners.adds} == {(METADATA,)}
    assert watch.serving == {R1, R2}
    assert any(
        m.startswith(f"Serving 2 of 2 router namespace(s) found in {netns} on 169.254.169.254:80")
        for m in messages(logged)
    )
    # a router found at start-up is not logged one by one
    assert not any(m.startswith("Serving router namespace") for m in messages(logged))
    watch.stopService()


def test_only_routers_with_the_prefix_are_served(netns):
    add(netns, "qrouter-e2eab-r1", "qrouter-e2ecd-r1", "qrouter-r3")
    listeners = FakeListeners()
    watch = watcher(netns, listeners, Clock(), id_prefix="e2eab-")
    watch.startService()
    assert listeners.added() == [Namespace.parse("qrouter-e2eab-r1")]
    watch.stopService()


def test_a_new_router_is_listened_in_within_a_second(netns, logged):
    """The inotify event makes one scan SETTLE later; no rescan is waited for."""
    listeners, clock = FakeListeners(), Clock()
    watch = watcher(netns, listeners, clock)
    watch.startService()
    (notifier,) = FakeINotify.made
    assert notifier.reading and notifier.watches[0][0].path == str(netns)
    add(netns, "qrouter-r1")
    notifier.event("qrouter-r1")
    notifier.event("qrouter-r1")  # a burst: one scan
    assert listeners.adds == []
    clock.advance(SETTLE)
    assert listeners.added() == [R1] and watch.serving == {R1}
    assert SETTLE < 1.0
    assert "Serving router namespace qrouter-r1 on 169.254.169.254:80" in messages(logged)
    watch.stopService()


def test_events_of_other_namespaces_make_no_scan(netns):
    listeners, clock = FakeListeners(), Clock()
    watch = watcher(netns, listeners, clock)
    watch.startService()
    (notifier,) = FakeINotify.made
    add(netns, "qrouter-r1", "ovnmeta-n1")
    notifier.event("ovnmeta-n1")
    assert clock.getDelayedCalls() == [] or all(
        call.getTime() >= 10.0 for call in clock.getDelayedCalls()
    )
    clock.advance(SETTLE)
    assert listeners.adds == []  # the router waits for its own event or the rescan
    watch.stopService()


def test_without_inotify_the_rescan_finds_new_routers(netns):
    listeners, clock = FakeListeners(), Clock()
    watch = watcher(netns, listeners, clock, inotify=False)
    watch.startService()
    assert FakeINotify.made == []
    add(netns, "qrouter-r1")
    clock.advance(9.9)
    assert listeners.adds == []
    clock.advance(0.1)
    assert listeners.added() == [R1]
    watch.stopService()


def test_a_router_gone_is_closed_and_forgotten(netns, logged):
    add(netns, "qrouter-r1", "qrouter-r2")
    listeners, clock = FakeListeners(), Clock()
    watch = watcher(netns, listeners, clock)
    watch.startService()
    (netns / "qrouter-r1").unlink()
    FakeINotify.made[0].event("qrouter-r1")
    clock.advance(SETTLE)
    assert listeners.removes == [R1]
    assert watch.serving == {R2} and watch.known == {R2}
    assert "Stopped serving router namespace qrouter-r1: its namespace is gone" in messages(logged)
    clock.advance(10.0)  # the rescan removes nothing more
    assert listeners.removes == [R1]
    watch.stopService()


def test_a_name_bound_to_a_new_namespace_is_listened_in_anew(netns, logged):
    """The router was deleted and made again between two looks: the socket lives in the
    old namespace, so it is closed and a new one opened in the new namespace."""
    add(netns, "qrouter-r1")
    listeners, clock = FakeListeners(), Clock()
    watch = watcher(netns, listeners, clock)
    watch.startService()
    keep = netns / "keep"
    os.link(netns / "qrouter-r1", keep)  # the old inode stays in use: the new one differs
    (netns / "qrouter-r1").unlink()
    add(netns, "qrouter-r1")
    clock.advance(10.0)
    assert listeners.removes == [R1] and listeners.added() == [R1, R1]
    assert watch.serving == {R1}
    assert "Stopped serving router namespace qrouter-r1: a new namespace has its name" in messages(
        logged
    )
    clock.advance(10.0)  # now in line: nothing more
    assert listeners.removes == [R1] and len(listeners.adds) == 2
    watch.stopService()


def test_a_namespace_not_ready_yet_is_tried_again_quickly_and_quietly(netns, logged):
    """The file is there before the namespace is bound onto it: tried again after 0.1,
    0.2 s, served, and nothing logged but the success."""
    add(netns, "qrouter-r1")
    listeners, clock = FakeListeners(), Clock()
    listeners.errors[R1] = [NOT_YET.format("qrouter-r1", "qrouter-r1")] * 2
    watch = watcher(netns, listeners, clock)
    watch.startService()
    assert watch.serving == frozenset() and watch.known == {R1}
    clock.advance(FIRST_RETRY)
    assert len(listeners.adds) == 2 and watch.serving == frozenset()
    clock.advance(2 * FIRST_RETRY)
    assert len(listeners.adds) == 3 and watch.serving == {R1}
    assert not any("Cannot serve" in m for m in messages(logged))
    watch.stopService()


def test_a_lasting_failure_is_logged_once_with_its_reason(netns, logged):
    """Logged after the quick tries, then only when the reason changes; the retries back
    off to the rescan interval; once served, the operator is told."""
    add(netns, "qrouter-r1")
    listeners, clock = FakeListeners(), Clock()
    denied = "cannot add 169.254.169.254/32 to lo in qrouter-r1: Operation not permitted"
    busy = "cannot listen on 169.254.169.254:80 in qrouter-r1: Address already in use"
    listeners.errors[R1] = [denied] * 9 + [busy]
    watch = watcher(netns, listeners, clock)
    watch.startService()
    delays = []
    for _ in range(8):
        (retry,) = [c for c in clock.getDelayedCalls() if c.func == watch._retry]
        delays.append(round(retry.getTime() - clock.seconds(), 6))
        clock.advance(delays[-1])
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0]
    cannot = [m for m in messages(logged) if m.startswith("Cannot serve")]
    assert cannot == [
        f"Cannot serve router namespace qrouter-r1: {denied} (tried again every 10 s at most)"
    ]
    assert watch.failure(R1) == denied
    clock.advance(10.0)  # busy now: a new reason, logged
    cannot = [m for m in messages(logged) if m.startswith("Cannot serve")]
    assert len(cannot) == 2 and busy in cannot[1]
    clock.advance(10.0)
    assert watch.serving == {R1} and watch.failure(R1) is None
    assert "Serving router namespace qrouter-r1 now" in messages(logged)
    assert QUIET_FAILURES == 3
    watch.stopService()


def test_a_router_gone_while_being_opened_is_closed(netns):
    add(netns, "qrouter-r1")
    listeners, clock = FakeListeners(), Clock()
    listeners.hold = True
    watch = watcher(netns, listeners, clock)
    watch.startService()
    (netns / "qrouter-r1").unlink()
    clock.advance(10.0)
    assert listeners.removes == [R1]
    listeners.release(R1, prepare=False)  # the opening ends after all: not served
    assert watch.serving == frozenset() and watch.known == frozenset()
    watch.stopService()


def test_a_router_gone_while_waiting_is_not_tried_again(netns):
    add(netns, "qrouter-r1")
    listeners, clock = FakeListeners(), Clock()
    listeners.errors[R1] = ["not yet"] * 10
    watch = watcher(netns, listeners, clock, inotify=False)
    watch.startService()
    (netns / "qrouter-r1").unlink()
    clock.advance(FIRST_RETRY)  # the retry sees it gone
    assert len(listeners.adds) == 1 and watch.known == frozenset()
    assert listeners.removes == []  # nothing was open
    clock.advance(60)
    assert len(listeners.adds) == 1
    watch.stopService()


def test_a_missing_directory_is_waited_for(tmp_path, logged):
    directory = tmp_path / "netns"
    listeners, clock = FakeListeners(), Clock()
    watch = watcher(directory, listeners, clock)
    watch.startService()
    assert FakeINotify.made == []  # nothing to watch yet
    assert any(f"{directory} does not exist yet" in m for m in messages(logged))
    directory.mkdir()
    add(directory, "qrouter-r1")
    clock.advance(10.0)
    assert listeners.added() == [R1]
    assert len(FakeINotify.made) == 1  # watched from now on
    watch.stopService()


def test_names_that_are_no_router_id_are_warned_about_once(netns, logged):
    add(netns, "qrouter-" + "x" * 70, "qrouter-r1")
    listeners, clock = FakeListeners(), Clock()
    watch = watcher(netns, listeners, clock)
    watch.startService()
    clock.advance(30.0)
    warned = [m for m in messages(logged) if m.startswith("Not serving qrouter-xxx")]
    assert len(warned) == 1 and "not a valid router or network id" in warned[0]
    assert listeners.added() == [R1]
    watch.stopService()


def test_stopping_cancels_everything(netns):
    add(netns, "qrouter-r1", "qrouter-r2")
    listeners, clock = FakeListeners(), Clock()
    listeners.errors[R2] = ["not yet"] * 10
    watch = watcher(netns, listeners, clock)
    watch.startService()
    (notifier,) = FakeINotify.made
    add(netns, "qrouter-r3")
    notifier.event("qrouter-r3")
    watch.stopService()
    assert notifier.lost and clock.getDelayedCalls() == []
    clock.advance(60)
    assert sorted(listeners.added(), key=str) == [R1, R2]
    assert listeners.removes == []  # the service's listener set closes them
