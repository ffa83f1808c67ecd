"""The fake Keystone of L{bench.fakes.neutron} behind requests-mock, for keystoneauth1 in
unit tests, and the pieces the Keystone tests share: a C{[neutron]} section loaded as
metaproxy loads it, and a runner that does the "thread's" work when told.

keystoneauth1 uses requests (blocking); requests-mock answers its requests in the calling
thread from the same L{FakeCloud} the Twisted resource serves, so a test runs the fetch
synchronously (L{Blocking}) and stays deterministic on a C{Clock}.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from bench.fakes.neutron.cloud import FakeCloud, Recorded
from metaproxy.config.errors import Sources
from metaproxy.config.keystone import Keystone, load_keystone
from metaproxy.config.load import read_conf

BASE = "http://cloud.test"
KEYSTONE = f"{BASE}/identity/v3"
TOKENS = f"{KEYSTONE}/auth/tokens"
PASSWORD = "Neutr0n-Pa55"
APP_ID, APP_SECRET = "app-cred-1", "app-cred-S3cret"

PASSWORD_SECTION = f"""\
[neutron]
auth_type = password
auth_url = {KEYSTONE}
username = metaproxy
password = {PASSWORD}
user_domain_name = Default
project_name = service
project_domain_name = Default
"""


def wall_clock() -> Clock:
    """A Clock at the wall clock's time: keystoneauth judges a token's expiry against the
    wall clock, so the fake's tokens must not look expired to it."""
    clock = Clock()
    clock.advance(float(int(time.time())))
    return clock


def serve_keystone(cloud: FakeCloud, mocker: Any, base: str = BASE) -> None:
    """Answer keystoneauth's discovery and token requests for C{base} from C{cloud}."""

    def tokens(request: Any, context: Any) -> Any:
        try:
            body = request.json()
        except ValueError:
            body = None
        status, document, headers = cloud.token_answer(body)
        context.status_code = status
        context.headers.update(headers, **{"Content-Type": "application/json"})
        return document

    def discovery(request: Any, context: Any) -> Any:
        cloud.requests.append(Recorded("discovery", request.path, []))
        return cloud.version()

    mocker.post(f"{base}/identity/v3/auth/tokens", json=tokens)
    mocker.get(f"{base}/identity/v3", json=discovery)
    mocker.get(f"{base}/identity", json=lambda r, c: cloud.versions(), status_code=300)


def load(tmp_path: Path, section: str, extra: str = "") -> Keystone:
    """C{[neutron]} (and C{extra} sections) as metaproxy's configuration loads it."""
    path = tmp_path / "metaproxy.ini"
    path.write_text(section + "\n" + extra)
    return load_keystone(read_conf([str(path)]), Sources((str(path),)))


class Blocking:
    """A C{run_blocking} that does the work when L{run} is called (at once with C{auto}),
    in the calling thread; C{runs} counts the works handed over."""

    def __init__(self, auto: bool = True) -> None:
        self.auto = auto
        self.runs = 0
        self._queued: list[tuple[Callable[[], Any], Deferred[Any]]] = []

    def __call__(self, work: Callable[[], Any]) -> Deferred[Any]:
        self.runs += 1
        d: Deferred[Any] = Deferred()
        self._queued.append((work, d))
        if self.auto:
            self.run()
        return d

    @property
    def pending(self) -> int:
        return len(self._queued)

    def run(self) -> None:
        queued, self._queued = self._queued, []
        for work, d in queued:
            try:
                result = work()
            except BaseException:
                d.errback(Failure())
            else:
                d.callback(result)
