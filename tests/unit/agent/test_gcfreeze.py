"""Start-up's objects are moved out of the garbage collector's sight once the reactor runs."""

import gc

from metaproxy.agent import gcfreeze


class RecordingReactor:
    def __init__(self):
        self.when_running = []

    def callWhenRunning(self, f, *args):
        self.when_running.append((f, args))


def test_frozen_only_once_the_reactor_runs(monkeypatch):
    """Nothing happens until the reactor runs; then start-up's garbage is collected and
    what is left frozen, in that order."""
    calls = []
    monkeypatch.setattr(gc, "collect", lambda *a: calls.append("collect"))
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))
    reactor = RecordingReactor()
    gcfreeze.freeze_when_running(reactor)
    assert calls == []
    ((f, args),) = reactor.when_running
    f(*args)
    assert calls == ["collect", "freeze"]


def test_freezing_moves_live_objects_out_of_the_collectors_sight():
    """What exists when it runs is no longer tracked by any generation (it is frozen)."""
    before = gc.get_freeze_count()
    kept = [[] for _ in range(1000)]
    try:
        gcfreeze.freeze_after_start()
        assert gc.get_freeze_count() >= before + len(kept)
    finally:
        gc.unfreeze()
