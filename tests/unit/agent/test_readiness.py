"""metaproxy.agent.readiness: READY when the checks pass, STOPPING, the watchdog."""

from twisted.internet.task import Clock

from metaproxy.agent.readiness import POLL, Readiness


class RecordingNotifier:
    """Keeps what would have gone to systemd, as (key=value, ...) tuples."""

    def __init__(self, enabled=True):
        self.enabled = enabled
        self.sent = []
        self.closed = False

    def notify(self, **fields):
        self.sent.append(tuple(f"{k}={v}" for k, v in fields.items()))
        return True

    def ready(self, status):
        return self.notify(READY=1, STATUS=status)

    def stopping(self, status):
        return self.notify(STOPPING=1, STATUS=status)

    def status(self, status):
        return self.notify(STATUS=status)

    def watchdog(self):
        return self.notify(WATCHDOG=1)

    def close(self):
        self.closed = True


def test_ready_only_once_the_lookups_are_ready():
    clock, notifier = Clock(), RecordingNotifier()
    state = {"ready": False, "status": "starting: ovn: not ready"}
    readiness = Readiness(clock, notifier, lambda: (state["ready"], state["status"]))
    readiness.start()
    assert notifier.sent == [("STATUS=starting: ovn: not ready",)]
    clock.advance(POLL * 3)  # same status: not repeated
    assert notifier.sent == [("STATUS=starting: ovn: not ready",)]
    state.update(ready=True, status="serving 3 socket(s)")
    clock.advance(POLL)
    assert notifier.sent[-1] == ("READY=1", "STATUS=serving 3 socket(s)")
    assert readiness.is_ready
    clock.advance(POLL * 10)  # no more polling once ready
    assert len(notifier.sent) == 2


def test_ready_at_once_when_nothing_is_awaited():
    clock, notifier = Clock(), RecordingNotifier()
    Readiness(clock, notifier, lambda: (True, "serving 1 socket(s)")).start()
    assert notifier.sent == [("READY=1", "STATUS=serving 1 socket(s)")]
    assert clock.getDelayedCalls() == []


def test_stopping_cancels_the_wait_and_says_so():
    clock, notifier = Clock(), RecordingNotifier()
    readiness = Readiness(clock, notifier, lambda: (False, "starting: 0 of 2 workers"))
    readiness.start()
    readiness.stopping("draining 4 request(s) in flight")
    assert notifier.sent[-1] == ("STOPPING=1", "STATUS=draining 4 request(s) in flight")
    assert clock.getDelayedCalls() == []


def test_watchdog_keepalives_from_the_reactor_until_stopped():
    clock, notifier = Clock(), RecordingNotifier()
    readiness = Readiness(clock, notifier, lambda: (True, "serving"), watchdog=5.0)
    readiness.start()
    clock.advance(5.0)
    clock.advance(5.0)
    assert notifier.sent.count(("WATCHDOG=1",)) == 3  # at start, then every 5 s
    readiness.stop()
    clock.advance(20.0)
    assert notifier.sent.count(("WATCHDOG=1",)) == 3
    assert notifier.closed


def test_outside_systemd_nothing_is_scheduled():
    clock, notifier = Clock(), RecordingNotifier(enabled=False)
    Readiness(clock, notifier, lambda: (False, "starting"), watchdog=5.0).start()
    assert notifier.sent == [] and clock.getDelayedCalls() == []


def test_stopping_is_said_once():
    clock, notifier = Clock(), RecordingNotifier()
    readiness = Readiness(clock, notifier, lambda: (True, "serving"))
    readiness.start()
    readiness.stopping("draining 1 request(s) in flight")
    readiness.stopping("stopping")
    assert [m for m in notifier.sent if m[0] == "STOPPING=1"] == [
        ("STOPPING=1", "STATUS=draining 1 request(s) in flight")
    ]
