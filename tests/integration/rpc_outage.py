"""A RabbitMQ outage under a steady request stream, measured as an operator would.

L{measure_outage} sends requests at a steady rate through the agent's shared socket
(several instances behind routers and networks, each request a new connection, so each
is a lookup of its own when the agent keeps no answers), stops the broker for
C{outage} seconds, starts it again and keeps sending for C{after} seconds. Meanwhile a
probe asks neutron-server C{get_ports} from a new client every C{probe_every} seconds,
the way a freshly started agent would: the first probe neutron-server receives after the
broker is back is the moment it answers again (L{Outage.recovered}).

The result (L{Outage}) holds each request (when sent, when answered, status, instance)
and the agent's log lines written from the broker's stop to the end, for the figures
the tests check and report (L{Outage.figures}).
"""

from __future__ import annotations

import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import attrs

from bench.fakes.neutronserver import FakeNeutronServer
from bench.fakes.rabbitmq import RabbitMQ
from bench.load.unixhttp import send_raw

__all__ = ["CALLERS", "Request", "Outage", "measure_outage", "PROBE_DEVICE"]

#: (header, value, address, the instance that must answer) for each caller of the stream.
CALLERS = (
    ("X-Neutron-Router-ID", "r1", "10.0.0.5", "vm-a"),
    ("X-Neutron-Router-ID", "r2", "10.0.0.5", "vm-b"),
    ("X-Neutron-Network-ID", "net-c", "10.0.1.7", "vm-c"),
    ("X-Neutron-Network-ID", "net-d", "192.168.5.9", "vm-d"),
)

#: The probe's filters name this device: no port has it, so the probe is told apart.
PROBE_DEVICE = "outage-probe"


@attrs.define
class Request:
    sent: float
    expected: str
    answered: float | None = None
    status: int | None = None
    instance: str | None = None
    error: str | None = None

    @property
    def right(self) -> bool:
        return self.status == 200 and self.instance == self.expected

    @property
    def unavailable(self) -> bool:
        return self.status == 503

    @property
    def wrong(self) -> bool:
        """Neither the right instance nor 503 (a wrong instance, a 404, no answer...)."""
        return not (self.right or self.unavailable)


_LOG_LINE = re.compile(r"^(\S+) \[([^\]#]+)#(\w+)\] ")
#: Lines about single requests, rate-limited per kind by the agent's log-flood control.
REQUEST_NAMESPACES = ("metaproxy.pipeline", "metaproxy.server")
_LEFT_OUT = "more line(s) like this were left out in"


@attrs.define
class Outage:
    stopped: float
    started: float  # the broker accepts logins again
    recovered: float | None  # neutron-server answers again (its first probe received)
    requests: list[Request]
    log_lines: list[str]

    def after_recovery(self, delay: float) -> list[Request]:
        assert self.recovered is not None
        return [r for r in self.requests if r.sent >= self.recovered + delay]

    @property
    def first_right_after_recovery(self) -> float | None:
        """Seconds from L{recovered} to the first right answer given after it."""
        assert self.recovered is not None
        times = [
            r.answered
            for r in self.requests
            if r.right and r.answered is not None and r.answered >= self.recovered
        ]
        return min(times) - self.recovered if times else None

    @property
    def unavailable_during(self) -> int:
        """503s answered while the broker was stopped."""
        return sum(
            1
            for r in self.requests
            if r.unavailable and r.answered is not None and self.stopped <= r.answered
            if r.answered <= self.started
        )

    def late_unavailable(self, delay: float = 2.0) -> list[Request]:
        return [r for r in self.after_recovery(delay) if r.unavailable]

    @property
    def wrong(self) -> list[Request]:
        return [r for r in self.requests if r.wrong]

    @property
    def bus_log_lines(self) -> list[str]:
        """The lines not about single requests: those, and the lines saying how many of
        them were left out, are the log-flood control's ([metaproxy] log_rate_limit)."""
        out = []
        for line in self.log_lines:
            m = _LOG_LINE.match(line)
            if m is not None and m.group(2) in REQUEST_NAMESPACES:
                continue
            if _LEFT_OUT in line:
                continue
            out.append(line)
        return out

    def figures(self) -> dict[str, Any]:
        first = self.first_right_after_recovery
        return {
            "recovered_after_start_s": round(self.recovered - self.started, 2)
            if self.recovered is not None
            else None,
            "first_right_answer_after_recovery_s": round(first, 2) if first is not None else None,
            "requests": len(self.requests),
            "unavailable_during_outage": self.unavailable_during,
            "late_503s": len(self.late_unavailable()),
            "wrong_answers": len(self.wrong),
            "log_lines_not_about_single_requests": len(self.bus_log_lines),
            "log_lines_all": len(self.log_lines),
        }


def _ask(path: str, caller: tuple[str, str, str, str], request: Request) -> None:
    header, value, address, _ = caller
    data = (
        "GET /openstack/latest/meta_data.json HTTP/1.1\r\nHost: 169.254.169.254\r\n"
        f"{header}: {value}\r\nX-Forwarded-For: {address}\r\n\r\n"
    ).encode()
    try:
        # haproxy waits up to its timeout server (32 s) for an answer; so does this
        answer = send_raw(path, [data], timeout=40)
    except Exception as e:  # no answer at all is a wrong answer
        request.error = f"{type(e).__name__}: {e}"
        request.answered = time.time()
        return
    request.answered = time.time()
    request.status = answer.status
    if answer.status == 200:
        try:
            request.instance = json.loads(answer.body)["uuid"]
        except (ValueError, KeyError):
            request.instance = None


def _probe(transport_url: str, stop: threading.Event, every: float) -> None:
    """Ask neutron-server from a new client every C{every} s (each in its own thread, so a
    lost probe delays no other), until C{stop}."""
    from metaproxy.neutron.bus import admin_context, import_messaging, messaging_conf

    oslo_messaging = import_messaging()

    def one() -> None:
        transport = oslo_messaging.get_rpc_transport(messaging_conf(), url=transport_url)
        try:
            client = oslo_messaging.get_rpc_client(
                transport,
                oslo_messaging.Target(topic="q-plugin", version="1.0"),
                serializer=oslo_messaging.NoOpSerializer(),
            ).prepare(timeout=2, retry=0)
            client.call(admin_context(), "get_ports", filters={"device_id": [PROBE_DEVICE]})
        except Exception:
            pass
        finally:
            transport.cleanup()

    while not stop.wait(every):
        threading.Thread(target=one, daemon=True).start()


def _log_since(log: str, since: float) -> list[str]:
    """The lines of C{log} (Twisted's text format, ISO times) written at C{since} or later;
    a line without a time stays with the one before."""
    import datetime

    out: list[str] = []
    keep = False
    for line in log.splitlines():
        m = _LOG_LINE.match(line)
        if m is not None:
            try:
                when = datetime.datetime.fromisoformat(m.group(1)).timestamp()
            except ValueError:
                when = None
            if when is not None:
                keep = when >= since - 1  # the log's times are whole seconds
        if keep:
            out.append(line)
    return out


def measure_outage(
    broker: RabbitMQ,
    neutron: FakeNeutronServer,
    shared_socket: str,
    agent_log: Any,
    *,
    rate: float = 10.0,
    warm_up: float = 3.0,
    outage: float = 10.0,
    after: float = 10.0,
    probe_every: float = 0.2,
) -> Outage:
    """See the module docstring. C{agent_log()} returns the agent's whole log."""
    requests: list[Request] = []
    stop_sending = threading.Event()
    stop_probing = threading.Event()
    pool = ThreadPoolExecutor(max_workers=int(rate * 40) + 10)

    def send() -> None:
        n = 0
        next_at = time.monotonic()
        while not stop_sending.is_set():
            caller = CALLERS[n % len(CALLERS)]
            request = Request(sent=time.time(), expected=caller[3])
            requests.append(request)
            pool.submit(_ask, shared_socket, caller, request)
            n += 1
            next_at += 1 / rate
            stop_sending.wait(max(0.0, next_at - time.monotonic()))

    sender = threading.Thread(target=send, daemon=True)
    prober = threading.Thread(
        target=_probe, args=(broker.transport_url, stop_probing, probe_every), daemon=True
    )
    sender.start()
    prober.start()
    try:
        time.sleep(warm_up)
        stopped = time.time()
        broker.stop()
        down = time.time()
        time.sleep(outage)
        broker.restart()
        started = time.time()
        deadline = time.monotonic() + 60
        recovered = None
        while recovered is None and time.monotonic() < deadline:
            probes = [
                c.at
                for c in neutron.calls_of("get_ports")
                if c.at > down and c.kwargs["filters"].get("device_id") == [PROBE_DEVICE]
            ]
            recovered = min(probes) if probes else None
            time.sleep(0.1)
        time.sleep(after)
    finally:
        stop_sending.set()
        stop_probing.set()
        sender.join()
        prober.join()
        pool.shutdown(wait=True)
    # the log's lines from the broker's stop on (the agent may still be writing the last)
    time.sleep(0.5)
    return Outage(
        stopped=stopped,
        started=started,
        recovered=recovered,
        requests=requests,
        log_lines=_log_since(agent_log(), stopped),
    )
