"""Instances asking for their metadata, from their own namespaces, through OVN's flows.

    asker = Asker()
    status, body = asker.get("mpovn-ab12-vm3", "/openstack")       # one request
    seconds = asker.until_answered("mpovn-ab12-vm3", timeout=30)   # first 200
    tally = boot_storm(["mpovn-ab12-vm1", ...], boots=200, concurrency=20)

Each request is a new TCP connection to 169.254.169.254:80 made from a socket created
inside the instance's namespace (a thread enters it with C{setns} around C{socket()}
only, L{bench.load.nstarget.NetnsSockets}), so it leaves by the instance's C{eth0}, crosses
the integration bridge and OVN's flows to the network's metadata port, and is answered
by whatever listens there (upstream's haproxy, or metaproxy itself). One process drives
every instance: no process per instance is started.

A boot is cloud-init's first-boot sequence (L{bench.load.cloudinit}: about 28 requests for an
instance with a key pair), each request on its own connection, as cloud-init's
C{requests} session does through haproxy's C{http-server-close}. A request that gets no
answer cloud-init accepts is tried again after C{retry_pause} seconds, up to C{retries}
times (cloud-init's OpenStack data source retries too); every try is counted.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import attrs

from bench.load.cloudinit import BootFailed, acceptable, boot_sequence
from bench.load.nstarget import NetnsSockets

__all__ = ["Asker", "BootTally", "boot_storm", "outcome"]

METADATA = ("169.254.169.254", 80)
USER_AGENT = "Cloud-Init/24.1"


def outcome(status: int | None, path: str, error: BaseException | None = None) -> str:
    """How one request ended: C{answered} (an answer cloud-init accepts), C{503}, or
    C{status N} / the error's class name (C{other})."""
    if error is not None:
        return type(error).__name__
    assert status is not None
    if acceptable(path, status):
        return "answered"
    if status == 503:
        return "503"
    return f"status {status}"


class _Connection(http.client.HTTPConnection):
    def __init__(
        self, sockets: NetnsSockets, netns: str, timeout: float, connect_timeout: float
    ) -> None:
        super().__init__(METADATA[0], METADATA[1], timeout=timeout)
        self._sockets = sockets
        self._netns = netns
        self._connect_timeout = connect_timeout

    def connect(self) -> None:
        sock = self._sockets.socket(self._netns)
        sock.settimeout(self._connect_timeout)
        try:
            sock.connect(METADATA)
        except BaseException:
            sock.close()
            raise
        sock.settimeout(self.timeout)
        self.sock = sock


class Asker:
    """Asks from any instance namespace; one L{NetnsSockets} per calling thread."""

    def __init__(self) -> None:
        self._local = threading.local()

    def _sockets(self) -> NetnsSockets:
        sockets = getattr(self._local, "sockets", None)
        if sockets is None:
            sockets = self._local.sockets = NetnsSockets()
        return sockets

    def get(
        self,
        namespace: str,
        path: str,
        timeout: float = 10.0,
        connect_timeout: float | None = None,
    ) -> tuple[int, bytes]:
        """GET C{path} from the instance in C{namespace}; C{(status, body)}.

        @param connect_timeout: for the connection (default C{timeout}); C{timeout}
            then bounds each read.
        @raise OSError, http.client.HTTPException: no answer.
        """
        conn = _Connection(
            self._sockets(),
            f"/run/netns/{namespace}",
            timeout,
            timeout if connect_timeout is None else connect_timeout,
        )
        try:
            conn.putrequest("GET", path, skip_accept_encoding=True)
            conn.putheader("User-Agent", USER_AGENT)
            conn.putheader("Accept", "*/*")
            conn.putheader("Connection", "close")
            conn.endheaders()
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def until_answered(
        self,
        namespace: str,
        *,
        timeout: float = 60.0,
        path: str = "/openstack",
        connect_timeout: float = 0.1,
        pause: float = 0.02,
        since: float | None = None,
        alive: Callable[[], bool] = lambda: True,
    ) -> float:
        """Ask until a 200 comes back; the seconds from C{since} (C{time.monotonic()}
        value; default: now) to that answer. Each try gives up connecting after
        C{connect_timeout} (a SYN lost before the flows or the listener are there is
        not waited out for the kernel's second), then waits 5 s for the answer.

        @raise TimeoutError: none within C{timeout}.
        @raise RuntimeError: C{alive()} says the agent is gone.
        """
        began = time.monotonic() if since is None else since
        deadline = time.monotonic() + timeout
        last = "nothing tried"
        while time.monotonic() < deadline:
            if not alive():
                raise RuntimeError(f"{namespace}: the agent died before answering ({last})")
            try:
                status, _ = self.get(namespace, path, 5.0, connect_timeout)
                if status == 200:
                    return time.monotonic() - began
                last = f"status {status}"
            except (OSError, http.client.HTTPException) as e:
                last = f"{type(e).__name__}: {e}"
            time.sleep(pause)
        raise TimeoutError(f"{namespace}: no 200 for {path} within {timeout} s (last: {last})")


@attrs.define
class BootTally:
    """What a storm got, per request try: C{outcomes} counts L{outcome}s."""

    boots: int = 0
    boots_failed: int = 0
    outcomes: Counter[str] = attrs.Factory(Counter)
    answer_seconds: list[float] = attrs.Factory(list)
    wall_seconds: float = 0.0
    _lock: threading.Lock = attrs.Factory(threading.Lock)

    @property
    def requests(self) -> int:
        return sum(self.outcomes.values())

    @property
    def answered(self) -> int:
        return self.outcomes["answered"]

    @property
    def refused_503(self) -> int:
        return self.outcomes["503"]

    @property
    def other(self) -> int:
        return self.requests - self.answered - self.refused_503

    def other_kinds(self) -> dict[str, int]:
        return {k: v for k, v in self.outcomes.items() if k not in ("answered", "503")}

    def add(self, kind: str, seconds: float) -> None:
        with self._lock:
            self.outcomes[kind] += 1
            if kind == "answered":
                self.answer_seconds.append(seconds)

    def boot_done(self, ok: bool) -> None:
        with self._lock:
            self.boots += 1
            if not ok:
                self.boots_failed += 1


def _boot(
    asker: Asker,
    namespace: str,
    tally: BootTally,
    *,
    timeout: float,
    retries: int,
    retry_pause: float,
) -> None:
    sequence = boot_sequence()
    path = next(sequence)
    while True:
        answer: tuple[int, bytes] | None = None
        for attempt in range(retries + 1):
            began = time.monotonic()
            try:
                status, body = asker.get(namespace, path, timeout)
            except (OSError, http.client.HTTPException) as e:
                tally.add(outcome(None, path, e), time.monotonic() - began)
            else:
                kind = outcome(status, path)
                tally.add(kind, time.monotonic() - began)
                if kind == "answered":
                    answer = (status, body)
                    break
            if attempt < retries:
                time.sleep(retry_pause)
        if answer is None:
            tally.boot_done(False)
            return
        try:
            path = sequence.send(answer)
        except StopIteration:
            tally.boot_done(True)
            return
        except BootFailed:
            tally.boot_done(False)
            return


def boot_storm(
    namespaces: Sequence[str],
    *,
    boots: int,
    concurrency: int,
    timeout: float = 10.0,
    retries: int = 5,
    retry_pause: float = 1.0,
) -> BootTally:
    """C{boots} boots over C{namespaces} in turn, C{concurrency} at once."""
    asker = Asker()
    tally = BootTally()
    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="boot") as pool:
        futures = [
            pool.submit(
                _boot,
                asker,
                namespaces[i % len(namespaces)],
                tally,
                timeout=timeout,
                retries=retries,
                retry_pause=retry_pause,
            )
            for i in range(boots)
        ]
        for future in futures:
            future.result()
    tally.wall_seconds = time.monotonic() - began
    return tally
