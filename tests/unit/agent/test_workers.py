"""Worker processes: the channel's line protocol, descriptor passing, the adopted port's
manners on a shared socket, the pool's supervision (fake processes) and a worker's
service on real sockets."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import time

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger, capturedLogs, eventAsJSON
from twisted.python.failure import Failure

import metaproxy
from metaproxy.agent import workers
from metaproxy.agent.workers import (
    AdoptedUNIXPort,
    Channel,
    ChannelProtocol,
    ConnectionTracker,
    ProtocolError,
    WorkerPool,
    WorkerService,
    parse_command,
    socket_name,
)
from metaproxy.http.listeners import ListenAddress, TCPBinding
from metaproxy.http.server import Limits
from metaproxy.namespace import Namespace

R1 = Namespace.parse("qrouter-r1")
R2 = Namespace.parse("qrouter-r2")
OVN = Namespace.parse("ovnmeta-n1")
TCP_V4 = TCPBinding(OVN, ListenAddress("169.254.169.254", 80))
TCP_V6 = TCPBinding(OVN, ListenAddress("fe80::a9fe:a9fe", 80, "tapn1"))


# ---- helpers ---------------------------------------------------------------------------


def listening(path, *, mode=0o640, backlog=4096) -> socket.socket:
    """A listening socket bound at C{path}, as the agent's process makes them."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, mode)
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def bound_path(fd: int) -> str:
    """The path the listening socket C{fd} is bound to (C{fd} is not consumed)."""
    with socket.socket(fileno=os.dup(fd)) as sock:
        return sock.getsockname()


def read_channel(sock: socket.socket) -> tuple[list[str], list[int]]:
    """Everything waiting on a channel end: its lines and the descriptors that came."""
    sock.setblocking(False)
    data, fds = b"", []
    while True:
        try:
            chunk, got, _flags, _addr = socket.recv_fds(sock, 65536, 64)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
        fds += got
    return data.decode("ascii").splitlines(), fds


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def backlog_of(path: str) -> str:
    out = subprocess.run(["ss", "-xlH"], capture_output=True, text=True, check=True).stdout
    line = next(l for l in out.splitlines() if path in l.split())
    return line.split()[3]  # Send-Q of a listening socket is its backlog


async def until(condition, timeout: float = 10.0) -> None:
    """Let the real reactor run until C{condition()} holds (fails after C{timeout})."""
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not come true")
        await deferLater(reactor, 0.01, lambda: None)


def blocking_exchange(path: str, data: bytes = b"") -> bytes:
    """Connect to C{path}, send C{data}, read until the server closes."""
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(10)
        client.connect(path)
        if data:
            client.sendall(data)
        chunks = []
        while chunk := client.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


class Hello(Protocol):
    def connectionMade(self):
        self.transport.write(b"hello")
        self.transport.loseConnection()


# ---- the line protocol -----------------------------------------------------------------


@pytest.mark.parametrize(
    "line, parsed",
    [
        (b"add shared", ("add", None, None)),
        (b"add qrouter-r1", ("add", R1, None)),
        (b"add qrouter-r1 7", ("add", R1, 7)),
        (b"remove qrouter-r1", ("remove", R1, None)),
        (b"remove shared", ("remove", None, None)),
        (b"add tcp/ovnmeta-n1/169.254.169.254:80", ("add", TCP_V4, None)),
        (b"add tcp/ovnmeta-n1/[fe80::a9fe:a9fe%tapn1]:80 9", ("add", TCP_V6, 9)),
        (b"remove tcp/ovnmeta-n1/[fe80::a9fe:a9fe%tapn1]:80", ("remove", TCP_V6, None)),
    ],
)
def test_channel_lines_parsed(line, parsed):
    """add <name> [<fd>] and remove <name>; 'shared' is the shared socket."""
    assert parse_command(line) == parsed


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"add",
        b"add bogus-name",
        b"remove qrouter-r1 7",
        b"add qrouter-r1 -1",
        b"frobnicate qrouter-r1",
        b"add qrouter-\xe9",
        b"add shared 4 5",
        b"add tcp/ovnmeta-n1",
        b"add tcp/ovnmeta-n1/169.254.169.254",
        b"add tcp/bogus/169.254.169.254:80",
        b"add tcp/ovnmeta-n1/fe80::1:80",
    ],
)
def test_bad_channel_lines_refused(line):
    with pytest.raises(ProtocolError):
        parse_command(line)


def test_socket_names():
    assert socket_name(None) == "shared" and socket_name(R1) == "qrouter-r1"
    assert socket_name(TCP_V6) == "tcp/ovnmeta-n1/[fe80::a9fe:a9fe%tapn1]:80"
    # the longest name fits in a line: a 64-character id, the longest IPv6 address
    # and interface name
    longest = TCPBinding(
        Namespace.parse("ovnmeta-" + "a" * 64),
        ListenAddress("fe80:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535, "i" * 15),
    )
    line = f"add {socket_name(longest)} 1000000".encode()
    assert len(line) < workers.channel.MAX_LINE and parse_command(line)[1] == longest


# ---- the adopted port ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_adopted_port_keeps_mode_backlog_path_and_socket(tmp_path):
    """Adopting and then stopping leaves the shared socket exactly as its owner made it:
    mode, backlog and path unchanged, and still accepting for the other holders (no
    chmod, no listen(50), no unlink, no shutdown)."""
    from twisted.internet import reactor
    from twisted.internet.threads import deferToThread

    path = str(tmp_path / "s.sock")
    owner = listening(path, mode=0o640, backlog=4096)
    try:
        port = AdoptedUNIXPort.adopt(reactor, owner.fileno(), Factory.forProtocol(Hello))
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
        assert backlog_of(path) == "4096"
        assert await deferToThread(blocking_exchange, path) == b"hello"
        await port.stopListening()
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
        # the owner's copy still takes connections: nothing was shut down
        client = socket.socket(socket.AF_UNIX)
        client.connect(path)
        owner.settimeout(5)
        accepted, _ = owner.accept()
        accepted.close()
        client.close()
    finally:
        owner.close()


def test_adopted_port_only_adopts():
    """An AdoptedUNIXPort cannot bind a path itself (that is the agent's job)."""
    port = AdoptedUNIXPort(b"/nonexistent/x.sock", Factory(), reactor=MemoryReactorClock())
    with pytest.raises(RuntimeError, match="only serves adopted sockets"):
        port.startListening()


# ---- the channel (agent's end) -------------------------------------------------------


def test_channel_sends_lines_and_descriptors_in_order(tmp_path):
    """Each line arrives in order; a descriptor arrives with its line and is the same
    socket; the caller may close its own descriptor at once."""
    reactor = MemoryReactorClock()
    ours, theirs = socket.socketpair()
    a, b = listening(tmp_path / "a.sock"), listening(tmp_path / "b.sock")
    channel = Channel(reactor, ours)
    channel.send("add shared 4")
    channel.send("add qrouter-r1", a.fileno())
    channel.send("remove qrouter-r1")
    channel.send("add qrouter-r2", b.fileno())
    a.close()
    b.close()
    lines, fds = read_channel(theirs)
    assert lines == ["add shared 4", "add qrouter-r1", "remove qrouter-r1", "add qrouter-r2"]
    assert [bound_path(fd) for fd in fds] == [str(tmp_path / "a.sock"), str(tmp_path / "b.sock")]
    assert channel.pending == 0 and not reactor.writers
    for fd in fds:
        os.close(fd)
    channel.close()
    theirs.close()


def test_channel_waits_for_room_when_the_worker_does_not_read(tmp_path):
    """With the worker's buffer full, lines (and copies of their descriptors) wait for
    the socket to be writable, and all arrive in order once the worker reads."""
    reactor = MemoryReactorClock()
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    path = str(tmp_path / "a.sock")
    owner = listening(path)
    channel = Channel(reactor, ours)
    count = 0
    while channel.pending == 0:
        channel.send(f"add qrouter-n{count}", owner.fileno())
        count += 1
        assert count < 10000, "the buffer never filled"
    for extra in range(count, count + 20):
        channel.send(f"add qrouter-n{extra}", owner.fileno())
    count += 20
    assert channel in reactor.writers
    owner.close()  # the queued copies keep it alive
    lines, fds = [], []
    while len(lines) < count:
        more_lines, more_fds = read_channel(theirs)
        lines += more_lines
        fds += more_fds
        channel.doWrite()
    assert lines == [f"add qrouter-n{i}" for i in range(count)]
    assert len(fds) == count and {bound_path(fd) for fd in fds} == {path}
    assert channel.pending == 0 and channel not in reactor.writers
    for fd in fds:
        os.close(fd)
    channel.close()
    theirs.close()


def test_channel_to_a_dead_worker_reports_and_releases(tmp_path):
    """A send to a worker that is gone closes the channel, reports it once, and closes
    every queued copy of a descriptor."""
    reactor = MemoryReactorClock()
    ours, theirs = socket.socketpair()
    owner = listening(tmp_path / "a.sock")
    broken = []
    channel = Channel(reactor, ours, broken.append)
    theirs.close()
    before = open_fds()
    channel.send("add qrouter-r1", owner.fileno())
    channel.send("add qrouter-r2", owner.fileno())
    assert channel.closed and len(broken) == 1
    assert open_fds() == before - 1  # its own socket closed too, no copy left behind
    owner.close()


def test_channel_close_releases_queued_descriptors(tmp_path):
    reactor = MemoryReactorClock()
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    owner = listening(tmp_path / "a.sock")
    channel = Channel(reactor, ours)
    before = open_fds()
    while channel.pending < 5:
        channel.send("add qrouter-r1", owner.fileno())
    assert open_fds() == before + 5
    channel.close()
    assert open_fds() == before - 1 and channel not in reactor.writers
    _, fds = read_channel(theirs)
    for fd in fds:
        os.close(fd)
    owner.close()
    theirs.close()


# ---- the channel (worker's end) ------------------------------------------------------


def make_channel_protocol():
    added, removed, lost = [], [], []
    protocol = ChannelProtocol(
        lambda ns, fd, inherited: added.append((ns, fd, inherited)),
        removed.append,
        lambda: lost.append(True),
    )
    protocol.makeConnection(StringTransport())
    return protocol, added, removed, lost


def test_channel_protocol_pairs_descriptors_with_add_lines():
    """'add <name>' takes the next descriptor received; 'add <name> <fd>' names an
    inherited one; 'remove <name>' takes none."""
    protocol, added, removed, _ = make_channel_protocol()
    protocol.fileDescriptorReceived(11)
    protocol.fileDescriptorReceived(12)
    protocol.dataReceived(b"add shared 4\nadd qrouter-r1\nremove qrouter-r1\nadd qro")
    protocol.dataReceived(b"uter-r2\n")
    assert added == [(None, 4, True), (R1, 11, False), (R2, 12, False)]
    assert removed == [R1]


def test_channel_protocol_ignores_bad_lines_and_closes_strays(monkeypatch):
    """A bad line or an add without a descriptor is logged and ignored; descriptors left
    when the agent goes away are closed, and the worker is told."""
    closed = []
    monkeypatch.setattr(os, "close", closed.append)
    protocol, added, removed, lost = make_channel_protocol()
    with capturedLogs() as events:
        protocol.dataReceived(b"add qrouter-r1\nfrobnicate\nadd shared\n")
    assert added == [] and removed == []
    assert len([e for e in events if e["log_level"].name == "error"]) == 3
    protocol.fileDescriptorReceived(21)
    protocol.connectionLost(Failure(Exception("gone")))
    assert closed == [21] and lost == [True]


@pytest_twisted.ensureDeferred
async def test_descriptors_and_lines_pair_up_through_a_real_socketpair(tmp_path):
    """Sent all at once (so the kernel may coalesce them), every 'add' on the worker's side
    gets the socket that was sent with its line."""
    from twisted.internet import reactor

    ours, theirs = socket.socketpair()
    names = [f"qrouter-r{i}" for i in range(12)]
    owners = {name: listening(tmp_path / f"{name}.sock") for name in names}
    added, removed = [], []
    factory = Factory.forProtocol(
        lambda: ChannelProtocol(
            lambda ns, fd, _: added.append((ns.name, bound_path(fd), os.close(fd))),
            removed.append,
            lambda: None,
        )
    )
    theirs.setblocking(False)
    transport = reactor.adoptStreamConnection(theirs.fileno(), socket.AF_UNIX, factory)
    theirs.close()
    channel = Channel(reactor, ours)
    try:
        for name in names:
            channel.send(f"add {name}", owners[name].fileno())
            if name.endswith("3"):
                channel.send(f"remove {name}")
        await until(lambda: len(added) == len(names))
        assert [(n, p) for n, p, _ in added] == [
            (name, str(tmp_path / f"{name}.sock")) for name in names
        ]
        assert [ns.name for ns in removed] == ["qrouter-r3"]
    finally:
        channel.close()
        transport.loseConnection()
        for owner in owners.values():
            owner.close()


# ---- the pool (agent's side), with fake processes ------------------------------------


class FakeProcess:
    def __init__(self, pid):
        self.pid = pid
        self.signals = []

    def signalProcess(self, signum):
        if self.pid is None:
            raise ProcessExitedAlready()
        self.signals.append(signum)


class Spawn:
    """One spawnProcess call, with what the child would have inherited."""

    def __init__(self, protocol, args, env, child_fds, process):
        self.protocol, self.args, self.env, self.process = protocol, args, env, process
        self.child_fds = child_fds
        self.channel = socket.socket(fileno=os.dup(child_fds[workers.CHANNEL_FD]))
        self.inherited = {
            n: bound_path(fd)
            for n, fd in child_fds.items()
            if isinstance(n, int) and n >= workers.FIRST_SOCKET_FD
        }

    def end(self, reason):
        self.process.pid = None
        self.protocol.processEnded(Failure(reason))

    def close(self):
        self.channel.close()


class ProcessReactor(MemoryReactorClock):
    def __init__(self):
        super().__init__()
        self.spawned: list[Spawn] = []

    def spawnProcess(
        self,
        protocol,
        executable,
        args,
        env=None,
        path=None,
        uid=None,
        gid=None,
        usePTY=0,
        childFDs=None,
    ):
        spawn = Spawn(protocol, args, env, childFDs, FakeProcess(1000 + len(self.spawned)))
        self.spawned.append(spawn)
        protocol.makeConnection(spawn.process)
        return spawn.process


@pytest.fixture
def pool_setup(tmp_path):
    reactor = ProcessReactor()
    published = []
    pool = WorkerPool(
        reactor, 2, ["--config-file", "/etc/a.ini"], executable="/py", publisher=published.append
    )
    owners = {
        name: listening(tmp_path / f"{name}.sock")
        for name in ("shared", "qrouter-r1", "qrouter-r2")
    }
    yield reactor, pool, owners, published
    if pool.running:
        pool.stopService()
    for spawn in reactor.spawned:
        spawn.close()
    for owner in owners.values():
        owner.close()


def test_pool_starts_workers_with_every_socket_inherited(pool_setup, tmp_path):
    """Each worker is 'python -m metaproxy.agent.workers' with the agent's config arguments,
    inherits every socket held at its start and is told which is which."""
    reactor, pool, owners, _ = pool_setup
    pool.add(None, owners["shared"].fileno())
    pool.add(R1, owners["qrouter-r1"].fileno())
    pool.startService()
    assert len(reactor.spawned) == 2
    for index, spawn in enumerate(reactor.spawned, 1):
        assert spawn.args == [
            "/py",
            "-m",
            "metaproxy.agent.workers",
            "--worker",
            str(index),
            "--channel-fd",
            "3",
            "--inherited",
            "2",
            "--config-file",
            "/etc/a.ini",
        ]
        assert spawn.child_fds[1] == "r" and spawn.child_fds[2] == "r"
        assert spawn.inherited == {
            4: str(tmp_path / "shared.sock"),
            5: str(tmp_path / "qrouter-r1.sock"),
        }
        assert read_channel(spawn.channel) == (["add shared 4", "add qrouter-r1 5"], [])
        assert os.path.dirname(os.path.dirname(metaproxy.__file__)) in spawn.env[
            "PYTHONPATH"
        ].split(os.pathsep)
    assert pool.pids() == [1000, 1001]


def test_pool_passes_sockets_added_and_removed_at_run_time(pool_setup, tmp_path):
    reactor, pool, owners, _ = pool_setup
    pool.startService()
    pool.add(R2, owners["qrouter-r2"].fileno())
    pool.remove(R2)
    pool.remove(R1)  # not held: nothing sent
    for spawn in reactor.spawned:
        lines, fds = read_channel(spawn.channel)
        assert lines == ["add qrouter-r2", "remove qrouter-r2"]
        assert [bound_path(fd) for fd in fds] == [str(tmp_path / "qrouter-r2.sock")]
        for fd in fds:
            os.close(fd)
    assert pool.sockets == {}


def test_dead_worker_restarted_with_backoff_and_every_current_socket(pool_setup, tmp_path):
    """A worker that dies is restarted after a delay that doubles while it keeps dying
    young and starts again once it has run a while; the new one inherits every socket
    held then, those added at run time included; the other worker is left alone."""
    reactor, pool, owners, _ = pool_setup
    pool.add(None, owners["shared"].fileno())
    pool.startService()
    pool.add(R1, owners["qrouter-r1"].fileno())
    first, other = reactor.spawned
    with capturedLogs() as events:
        first.end(ProcessTerminated(signal=signal.SIGKILL))
    assert [e["delay"] for e in events if e.get("how") == "was killed by SIGKILL"] == [
        workers.RESTART_FIRST
    ]
    reactor.advance(workers.RESTART_FIRST * 0.9)
    assert len(reactor.spawned) == 2
    reactor.advance(workers.RESTART_FIRST * 0.2)
    assert len(reactor.spawned) == 3
    again = reactor.spawned[2]
    assert again.args[4] == "1"
    assert again.inherited == {
        4: str(tmp_path / "shared.sock"),
        5: str(tmp_path / "qrouter-r1.sock"),
    }
    assert read_channel(again.channel)[0] == ["add shared 4", "add qrouter-r1 5"]
    # dying young again: twice the delay
    again.end(ProcessDone(0))
    reactor.advance(workers.RESTART_FIRST * 2 * 0.9)
    assert len(reactor.spawned) == 3
    reactor.advance(workers.RESTART_FIRST * 2 * 0.2)
    assert len(reactor.spawned) == 4
    # after a long, healthy run: back to the first delay
    reactor.advance(workers.STABLE_AFTER + 1)
    reactor.spawned[3].end(ProcessTerminated(exitCode=1))
    reactor.advance(workers.RESTART_FIRST * 1.1)
    assert len(reactor.spawned) == 5
    assert other.process.signals == [] and sorted(pool.pids()) == [1001, 1004]


def test_restart_delay_is_capped(pool_setup):
    reactor, pool, _, _ = pool_setup
    pool.startService()
    delays = []
    for _ in range(10):
        spawn = next(s for s in reactor.spawned if s.process.pid is not None and s.args[4] == "1")
        before = reactor.seconds()
        spawn.end(ProcessTerminated(exitCode=1))
        count = len(reactor.spawned)
        while len(reactor.spawned) == count:
            reactor.advance(0.25)
        delays.append(reactor.seconds() - before)
    assert max(delays) <= workers.RESTART_MAX + 0.25 and delays[-1] >= workers.RESTART_MAX


def test_stop_terminates_workers_and_does_not_restart_them(pool_setup):
    """Stopping sends SIGTERM to every worker, waits for them, restarts none, and kills
    one that does not stop in time."""
    reactor, pool, _, _ = pool_setup
    pool.startService()
    first, second = reactor.spawned
    d = pool.stopService()
    assert first.process.signals == [signal.SIGTERM] == second.process.signals
    first.end(ProcessDone(0))
    assert not d.called
    reactor.advance(workers.KILL_AFTER)
    assert second.process.signals == [signal.SIGTERM, signal.SIGKILL]
    second.end(ProcessTerminated(signal=signal.SIGKILL))
    assert d.called
    reactor.advance(workers.RESTART_MAX * 2)
    assert len(reactor.spawned) == 2 and pool.pids() == []


def test_stop_cancels_a_pending_restart(pool_setup):
    reactor, pool, _, _ = pool_setup
    pool.startService()
    reactor.spawned[0].end(ProcessTerminated(exitCode=1))
    d = pool.stopService()
    reactor.spawned[1].end(ProcessDone(0))
    assert d.called
    reactor.advance(workers.RESTART_MAX * 2)
    assert len(reactor.spawned) == 2


def ready_line(index: int) -> bytes:
    """What a worker writes on its stdout when it is ready."""
    events = []
    Logger("metaproxy.workers", observer=events.append).info(
        "Worker {index} ready: serving {count} socket(s)", index=index, count=0, worker_ready=True
    )
    return (eventAsJSON(events[0]) + "\n").encode()


def test_reload_signals_ready_workers_now_and_starting_ones_once_ready(pool_setup):
    """SIGHUP goes to the workers that are ready; one still starting (SIGHUP would kill
    it) gets it once it says it is ready, once; a dead one gets nothing."""
    reactor, pool, _, _ = pool_setup
    pool.startService()
    first, second = reactor.spawned
    first.protocol.childDataReceived(1, ready_line(1))
    assert pool.reload() == 2
    assert first.process.signals == [signal.SIGHUP] and second.process.signals == []
    second.protocol.childDataReceived(1, ready_line(2))
    second.protocol.childDataReceived(1, ready_line(2))
    assert second.process.signals == [signal.SIGHUP]
    first.end(ProcessTerminated(exitCode=1))
    assert pool.reload() == 1
    reactor.advance(workers.RESTART_FIRST * 1.1)
    third = reactor.spawned[2]
    assert pool.reload() == 2
    assert third.process.signals == [] and second.process.signals == [signal.SIGHUP] * 3
    third.protocol.childDataReceived(1, ready_line(1))
    assert third.process.signals == [signal.SIGHUP]


def test_worker_that_cannot_take_its_sockets_is_killed(pool_setup):
    """A worker whose channel is gone (it cannot get new sockets) is killed, so that it
    restarts with every socket."""
    reactor, pool, owners, _ = pool_setup
    pool.startService()
    reactor.spawned[0].channel.close()
    with capturedLogs():
        pool.add(R1, owners["qrouter-r1"].fileno())
    assert reactor.spawned[0].process.signals == [signal.SIGKILL]
    assert reactor.spawned[1].process.signals == []


def test_worker_log_relayed_tagged_with_the_worker(pool_setup):
    """JSON events on a worker's stdout (split anywhere) are logged as the agent's own,
    tagged with the worker's number and pid; its stderr lines become warnings."""
    reactor, pool, _, published = pool_setup
    pool.startService()
    events = []
    Logger("metaproxy.server", observer=events.append).warn(
        "Refused a request on {socket}", socket="the shared socket"
    )
    data = (eventAsJSON(events[0]) + "\n").encode()
    protocol = reactor.spawned[1].protocol
    protocol.childDataReceived(1, data[:10])
    protocol.childDataReceived(1, data[10:] + b"not json\n")
    with capturedLogs() as logged:
        protocol.childDataReceived(2, b"Traceback (most recent call last):\npartial")
        reactor.spawned[1].end(ProcessDone(0))
    event = published[0]
    assert event["log_system"] == "metaproxy.server#warn worker 2 pid 1001"
    assert event["socket"] == "the shared socket"
    texts = [e.get("line") for e in logged if e.get("system") == "worker 2 pid 1001"]
    assert texts == ["Traceback (most recent call last):", "partial"]


# ---- a worker (its service, in this process) -----------------------------------------


class FakePipeline:
    def __init__(self):
        self.calls = []
        self.hold: Deferred | None = None

    def handle(self, request, namespace):
        self.calls.append(namespace)
        if self.hold is not None:
            return self.hold
        return succeed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")


class FakeProxy:
    def __init__(self):
        self.pipeline = FakePipeline()
        self.limits = Limits()
        self.closed = False
        self.started = False

    def start(self):
        self.started = True

    def close(self):
        self.closed = True
        return succeed(None)


class StopRecordingReactor:
    """The real reactor, except that stop() is only recorded."""

    def __init__(self, reactor):
        self._reactor = reactor
        self.stopped = 0

    def stop(self):
        self.stopped += 1

    def __getattr__(self, name):
        return getattr(self._reactor, name)


REQUEST = b"GET /latest HTTP/1.1\r\nX-Neutron-Router-ID: r1\r\nX-Forwarded-For: 10.0.0.5\r\n\r\n"


@pytest_twisted.ensureDeferred
async def test_worker_serves_what_its_channel_hands_it_and_drains_on_stop(tmp_path):
    """A worker serves the sockets sent over its channel (shared and per namespace, each
    with its namespace), lets go of a removed one without unlinking it, and on stop
    stops accepting but lets the request in flight finish."""
    from twisted.internet import reactor
    from twisted.internet.threads import deferToThread

    ours, theirs = socket.socketpair()
    proxy = FakeProxy()
    service = WorkerService(
        reactor, proxy, 1, os.dup(theirs.fileno()), install_signal_handlers=False
    )
    theirs.close()
    shared, r1 = str(tmp_path / "shared.sock"), str(tmp_path / "r1.sock")
    owners = [listening(shared), listening(r1)]
    channel = Channel(reactor, ours)
    stopped = None
    try:
        service.startService()
        assert proxy.started  # the worker starts its own lookup backend
        channel.send("add shared", owners[0].fileno())
        channel.send("add qrouter-r1", owners[1].fileno())
        await until(lambda: len(service.ports) == 2)
        assert (await deferToThread(blocking_exchange, shared, REQUEST)).endswith(b"ok")
        assert (await deferToThread(blocking_exchange, r1, REQUEST)).endswith(b"ok")
        assert proxy.pipeline.calls == [None, R1]
        channel.send("remove qrouter-r1")
        await until(lambda: R1 not in service.ports)
        assert os.path.exists(r1) and stat.S_IMODE(os.stat(r1).st_mode) == 0o640
        # a request in flight when the worker is told to stop is still answered
        proxy.pipeline.hold = Deferred()
        answer = deferToThread(blocking_exchange, shared, REQUEST)
        await until(lambda: len(proxy.pipeline.calls) == 3)
        stopped = service.stopService()
        assert not stopped.called and not proxy.closed
        proxy.pipeline.hold.callback(
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nlate"
        )
        assert (await answer).endswith(b"late")
        await stopped
        assert proxy.closed and service.ports == {}
        assert os.path.exists(shared)
    finally:
        if stopped is None:
            service.stopService()
        channel.close()
        for owner in owners:
            owner.close()


@pytest_twisted.ensureDeferred
async def test_worker_stops_when_the_agent_goes_away(tmp_path):
    from twisted.internet import reactor

    recording = StopRecordingReactor(reactor)
    ours, theirs = socket.socketpair()
    service = WorkerService(
        recording, FakeProxy(), 1, os.dup(theirs.fileno()), install_signal_handlers=False
    )
    theirs.close()
    service.startService()
    try:
        with capturedLogs():
            ours.close()
            await until(lambda: recording.stopped)
            service.terminate("SIGTERM")  # asked again: the reactor is stopped once only
        assert recording.stopped == 1
    finally:
        await service.stopService()


def test_connection_tracker_idle():
    clock = Clock()
    tracker = ConnectionTracker()
    assert tracker.idle(clock, 5).result is True
    tracker.opened()
    tracker.opened()
    finished = tracker.idle(clock, 5)
    tracker.closed()
    assert not finished.called
    tracker.closed()
    assert finished.result is True
    tracker.opened()
    late = tracker.idle(clock, 5)
    clock.advance(5)
    assert late.result is False and not clock.getDelayedCalls()


@pytest_twisted.ensureDeferred
async def test_worker_ready_once_it_serves_its_inherited_sockets(tmp_path):
    """'add <name> <fd>' adopts a descriptor the worker inherited; the worker says it is
    ready when it serves as many as it was told it inherited, not before."""
    from twisted.internet import reactor
    from twisted.internet.threads import deferToThread

    ours, theirs = socket.socketpair()
    owners = [listening(tmp_path / "shared.sock"), listening(tmp_path / "r1.sock")]
    inherited = [os.dup(o.fileno()) for o in owners]
    service = WorkerService(
        reactor, FakeProxy(), 3, os.dup(theirs.fileno()), inherited=2, install_signal_handlers=False
    )
    theirs.close()
    channel = Channel(reactor, ours)
    try:
        with capturedLogs() as events:
            service.startService()
            channel.send(f"add shared {inherited[0]}")
            await until(lambda: None in service.ports)
            ready = [e for e in events if e["log_format"].startswith("Worker {index} ready")]
            assert ready == []
            channel.send(f"add qrouter-r1 {inherited[1]}")
            await until(lambda: R1 in service.ports)
        ready = [
            (e["index"], e["count"])
            for e in events
            if e["log_format"].startswith("Worker {index} ready")
        ]
        assert ready == [(3, 2)]
        # the inherited descriptors were taken over: closed here, served from copies
        for fd, owner in zip(inherited, owners, strict=False):
            try:
                still = os.fstat(fd).st_ino == os.fstat(owner.fileno()).st_ino
            except OSError:
                still = False  # closed, and the number not reused since
            assert not still
        answer = await deferToThread(blocking_exchange, str(tmp_path / "r1.sock"), REQUEST)
        assert answer.endswith(b"ok")
    finally:
        await service.stopService()
        channel.close()
        for owner in owners:
            owner.close()


def test_channel_to_a_stuck_worker_gives_up_at_the_limit(tmp_path):
    """A worker that stops reading its channel does not make the agent hoard copies of
    descriptors: past max_pending lines the channel is reported broken (and the worker
    is killed and restarted by the pool)."""
    reactor = MemoryReactorClock()
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    owner = listening(tmp_path / "a.sock")
    broken = []
    channel = Channel(reactor, ours, broken.append, max_pending=10)
    before = open_fds()
    while not channel.closed:
        channel.send("add qrouter-r1", owner.fileno())
    assert len(broken) == 1 and "10 lines waiting" in broken[0]
    assert open_fds() == before - 1 and channel not in reactor.writers
    _, fds = read_channel(theirs)
    for fd in fds:
        os.close(fd)
    owner.close()
    theirs.close()


class CallerPipeline:
    def __init__(self):
        self.calls = []

    def handle(self, request, namespace, caller=None):
        self.calls.append((namespace, caller))
        return succeed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")


def tcp_exchange(address, data: bytes) -> bytes:
    with socket.create_connection(address[:2], timeout=10) as client:
        client.sendall(data)
        chunks = []
        while chunk := client.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest_twisted.ensureDeferred
async def test_worker_serves_tcp_sockets_with_the_peer_as_caller():
    """A TCP socket handed over the channel is served with the caller taken from the
    peer; a namespace's sockets share one factory (one connection bound), dropped with
    its last socket."""
    from twisted.internet import reactor
    from twisted.internet.threads import deferToThread

    ours, theirs = socket.socketpair()
    proxy = FakeProxy()
    proxy.pipeline = CallerPipeline()
    service = WorkerService(
        reactor, proxy, 1, os.dup(theirs.fileno()), install_signal_handlers=False
    )
    theirs.close()
    owners = []
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        sock = socket.socket(family)
        sock.bind((host, 0))
        sock.listen(8)
        owners.append(sock)
    v4 = TCPBinding(OVN, ListenAddress("127.0.0.1", owners[0].getsockname()[1]))
    v6 = TCPBinding(OVN, ListenAddress("::1", owners[1].getsockname()[1]))
    channel = Channel(reactor, ours)
    try:
        service.startService()
        channel.send(f"add {socket_name(v4)}", owners[0].fileno())
        channel.send(f"add {socket_name(v6)}", owners[1].fileno())
        await until(lambda: len(service.ports) == 2)
        assert service.ports[v4].factory is service.ports[v6].factory
        assert service.ports[v4].factory.peer
        spoof = REQUEST.replace(b"10.0.0.5", b"10.9.9.9")
        assert (await deferToThread(tcp_exchange, owners[0].getsockname(), spoof)).endswith(b"ok")
        assert (await deferToThread(tcp_exchange, owners[1].getsockname(), spoof)).endswith(b"ok")
        seen = [(ns, c.namespace, c.ip, c.from_peer) for ns, c in proxy.pipeline.calls]
        assert seen == [(OVN, OVN, "127.0.0.1", True), (OVN, OVN, "::1", True)]
        channel.send(f"remove {socket_name(v4)}")
        await until(lambda: v4 not in service.ports)
        assert OVN in service._peer_factories  # v6 still uses it
        channel.send(f"remove {socket_name(v6)}")
        await until(lambda: not service.ports)
        assert service._peer_factories == {}
    finally:
        await service.stopService()
        channel.close()
        for owner in owners:
            owner.close()
