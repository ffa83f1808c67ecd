"""Socket preparation, listener set, namespace registry and control protocol."""

import os
import shutil
import socket
import stat
import subprocess

import pytest
import pytest_twisted
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock, StringTransport

from metaproxy.agent.control import ControlFactory
from metaproxy.agent.registry import NamespaceRegistry, RegistryError
from metaproxy.http.listeners import HeldSocket, ListenError, Listeners, prepare_socket_path
from metaproxy.namespace import Namespace


def test_missing_directory_created_0755(tmp_path):
    """The socket directory is created with mode 0755 when missing (TA checklist)."""
    path = tmp_path / "sub" / "metadata_proxy"
    prepare_socket_path(str(path))
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o755


def test_stale_socket_removed(tmp_path):
    """A socket file nobody listens on is unlinked (TA checklist)."""
    path = str(tmp_path / "s")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(path)
    sock.close()
    prepare_socket_path(path)
    assert not os.path.exists(path)


def test_live_socket_never_stolen(tmp_path):
    """A socket a live process listens on is left alone and reported."""
    path = str(tmp_path / "s")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(path)
    sock.listen(5)
    try:
        with pytest.raises(ListenError, match="in use by a live process"):
            prepare_socket_path(path)
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
    finally:
        sock.close()


def test_non_socket_file_left_alone(tmp_path):
    """A regular file at the socket path is not deleted."""
    path = tmp_path / "s"
    path.write_text("precious")
    with pytest.raises(ListenError, match="not a socket"):
        prepare_socket_path(str(path))
    assert path.read_text() == "precious"


def test_path_too_long(tmp_path):
    """A path longer than sun_path allows is refused with a clear message."""
    with pytest.raises(ListenError, match="longer than 97 bytes"):
        prepare_socket_path(str(tmp_path / ("x" * 120)))


def make_listeners(tmp_path, reactor=None):
    reactor = reactor or MemoryReactorClock()
    built = []

    def factory_for(ns):
        f = Factory()
        f.namespace = ns
        built.append(ns)
        return f

    listeners = Listeners(
        reactor,
        shared_socket=str(tmp_path / "metadata_proxy"),
        socket_dir=str(tmp_path / "ns"),
        mode=0o664,
        backlog=4096,
        factory_for=factory_for,
    )
    return reactor, listeners


def test_backlog_and_mode_applied(tmp_path):
    """metadata_backlog and the socket mode are applied to every socket (upstream:
    neither), and each socket is served by its namespace's factory."""
    reactor, listeners = make_listeners(tmp_path)
    listeners.start_shared()
    listeners.add(Namespace.parse("qrouter-r1"))
    shared, r1 = str(tmp_path / "metadata_proxy"), str(tmp_path / "ns" / "qrouter-r1.sock")
    for path in (shared, r1):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o664
    assert listeners._shared_port.port.factory.namespace is None
    assert listeners._ports[
        Namespace.parse("qrouter-r1")
    ].port.factory.namespace == Namespace.parse("qrouter-r1")
    if shutil.which("ss"):
        out = subprocess.run(["ss", "-xlnH"], capture_output=True, text=True).stdout
        backlogs = {
            line.split()[4]: line.split()[3] for line in out.splitlines() if len(line.split()) > 4
        }
        assert backlogs[shared] == backlogs[r1] == "4096"
    listeners.stop()
    reactor.advance(0)
    assert not os.path.exists(shared) and not os.path.exists(r1)


@pytest_twisted.ensureDeferred
async def test_add_remove_real_sockets(tmp_path):
    """Adding makes the socket file (with the mode); removing deletes it; others stay."""
    from twisted.internet import reactor

    _, listeners = make_listeners(tmp_path, reactor)
    a, b = Namespace.parse("qdhcp-n1"), Namespace.parse("ovnmeta-n2")
    try:
        listeners.add(a)
        listeners.add(b)
        path_a, path_b = listeners.socket_path(a), listeners.socket_path(b)
        assert stat.S_IMODE(os.stat(path_a).st_mode) == 0o664
        await listeners.remove(a)
        assert not os.path.exists(path_a) and os.path.exists(path_b)
        assert listeners.namespaces == {b}
    finally:
        await listeners.stop()


def test_registry_from_config_directory_and_control(tmp_path):
    """Declared + directory namespaces are served; add/remove change only what differs."""
    reactor, listeners = make_listeners(tmp_path)
    nsdir = tmp_path / "namespaces.d"
    nsdir.mkdir()
    (nsdir / "qrouter-r2").touch()
    (nsdir / "bogus-name").touch()
    (nsdir / ".tmp-file").touch()
    declared = Namespace.parse("qdhcp-n1")
    registry = NamespaceRegistry(
        reactor,
        listeners,
        declared=[declared],
        directory=str(nsdir),
        rescan_interval=1,
        use_inotify=False,
    )
    registry.startService()
    assert registry.names() == ["qdhcp-n1", "qrouter-r2"]
    # a file dropped in the directory is picked up by the rescan
    (nsdir / "ovnmeta-n3").touch()
    reactor.advance(1)
    assert "ovnmeta-n3" in registry.names()
    # control-style add persists a marker file
    registry.add(Namespace.parse("qrouter-r4"))
    assert (nsdir / "qrouter-r4").exists() and "qrouter-r4" in registry.names()
    registry.remove(Namespace.parse("qrouter-r2"))
    assert "qrouter-r2" not in registry.names() and not (nsdir / "qrouter-r2").exists()
    with pytest.raises(RegistryError, match="declared in"):
        registry.remove(declared)
    with pytest.raises(RegistryError, match="not registered"):
        registry.remove(Namespace.parse("qrouter-nothere"))
    registry.stopService()


def test_registry_keeps_others_when_one_fails(tmp_path):
    """A namespace whose socket cannot be made is reported; the others are served."""
    reactor, listeners = make_listeners(tmp_path)
    nsdir = tmp_path / "namespaces.d"
    nsdir.mkdir()
    (tmp_path / "ns").mkdir()
    (tmp_path / "ns" / "qrouter-bad.sock").write_text("not a socket")
    (nsdir / "qrouter-bad").touch()
    (nsdir / "qrouter-good").touch()
    registry = NamespaceRegistry(
        reactor, listeners, declared=[], directory=str(nsdir), rescan_interval=1, use_inotify=False
    )
    registry.startService()
    assert registry.names() == ["qrouter-good"]
    assert "not a socket" in registry.failure(Namespace.parse("qrouter-bad"))
    failure = []
    registry.add(Namespace.parse("qrouter-bad")).addErrback(failure.append)
    assert failure and failure[0].check(RegistryError)
    registry.stopService()


def control(registry, line):
    protocol = ControlFactory(registry).buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(line)
    registry._reactor.advance(0)  # a socket stops listening on the next reactor turn
    return transport.value().decode()


def test_control_protocol(tmp_path):
    """add, list and remove over the control protocol; errors are one clear line."""
    reactor, listeners = make_listeners(tmp_path)
    registry = NamespaceRegistry(
        reactor, listeners, declared=[], directory=str(tmp_path / "d"), use_inotify=False
    )
    registry.startService()
    assert control(registry, b"add qrouter-r1\n") == "ok\n"
    assert control(registry, b"list\n") == "ok\nqrouter-r1\n"
    assert control(registry, b"remove qrouter-r1\n") == "ok\n"
    assert control(registry, b"list\n") == "ok\n"
    assert control(registry, b"add nonsense\n").startswith("error: ")
    assert control(registry, b"frobnicate\n").startswith("error: expected")
    assert control(registry, b"remove qrouter-r9\n") == "error: qrouter-r9 is not registered\n"
    registry.stopService()


def stale_socket(tmp_path):
    path = str(tmp_path / "s")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(path)
    sock.close()
    return path


def test_stale_socket_vanishing_meanwhile_is_fine(tmp_path, monkeypatch):
    """unlink failing with ENOENT (someone removed it meanwhile) is ignored (TA checklist)."""
    path = stale_socket(tmp_path)

    def gone(p):
        raise FileNotFoundError(2, "No such file or directory", p)

    monkeypatch.setattr(os, "unlink", gone)
    prepare_socket_path(path)  # no error


def test_stale_socket_that_cannot_be_removed_is_reported(tmp_path, monkeypatch):
    """unlink failing while the file still exists is an error naming the path (TA)."""
    path = stale_socket(tmp_path)

    def denied(p):
        raise PermissionError(13, "Permission denied", p)

    monkeypatch.setattr(os, "unlink", denied)
    with pytest.raises(ListenError, match="cannot remove the stale socket .*Permission denied"):
        prepare_socket_path(path)


# ---- hand-off mode (metadata_workers >= 2): this process binds, the workers accept ----


class RecordingHandoff:
    """Records what Listeners hands over, and whether the path existed at that moment."""

    def __init__(self, listeners_ref):
        self.calls = []
        self._listeners = listeners_ref

    def add(self, namespace, fd):
        with socket.socket(fileno=os.dup(fd)) as sock:
            path = sock.getsockname()
            listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        self.calls.append(("add", namespace, path, bool(listening)))

    def remove(self, namespace):
        path = self._listeners[0].socket_path(namespace) if namespace else None
        self.calls.append(("remove", namespace, os.path.exists(path)))


def make_handoff_listeners(tmp_path):
    ref = []
    handoff = RecordingHandoff(ref)
    listeners = Listeners(
        MemoryReactorClock(),
        shared_socket=str(tmp_path / "metadata_proxy"),
        socket_dir=str(tmp_path / "ns"),
        mode=0o640,
        backlog=4096,
        handoff=handoff,
    )
    ref.append(listeners)
    return listeners, handoff


def test_handoff_binds_with_mode_and_backlog_and_hands_over(tmp_path):
    """In hand-off mode each socket is bound here (mode and backlog applied, listening)
    and its descriptor handed over; nothing is served on this reactor."""
    listeners, handoff = make_handoff_listeners(tmp_path)
    r1 = Namespace.parse("qrouter-r1")
    listeners.start_shared()
    listeners.add(r1)
    listeners.add(r1)  # already there: nothing happens
    shared, path = str(tmp_path / "metadata_proxy"), listeners.socket_path(r1)
    assert handoff.calls == [("add", None, shared, True), ("add", r1, path, True)]
    for p in (shared, path):
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o640
    assert listeners._reactor.unixServers == []
    try:
        out = subprocess.run(["ss", "-xlH"], capture_output=True, text=True, check=True).stdout
    except (FileNotFoundError, subprocess.CalledProcessError):
        pytest.skip("ss (iproute2) is not installed: cannot read the listen backlog")
    line = next(l for l in out.splitlines() if path in l.split())
    assert line.split()[3] == "4096", line
    listeners.stop()


def test_handoff_remove_unlinks_before_telling_the_workers(tmp_path):
    """Removing a namespace unlinks its path first, then tells the handoff; stopping
    unlinks every path (the workers are stopped with the service, not told)."""
    listeners, handoff = make_handoff_listeners(tmp_path)
    r1, r2 = Namespace.parse("qrouter-r1"), Namespace.parse("qdhcp-n2")
    listeners.start_shared()
    listeners.add(r1)
    listeners.add(r2)
    done = []
    listeners.remove(r1).addCallback(done.append)
    assert done == [None] and handoff.calls[-1] == ("remove", r1, False)
    assert listeners.namespaces == {r2}
    listeners.add(r1)  # the same namespace again: a fresh socket at the same path
    assert handoff.calls[-1][:2] == ("add", r1) and os.path.exists(listeners.socket_path(r1))
    calls = len(handoff.calls)
    listeners.stop()
    assert len(handoff.calls) == calls
    assert not os.path.exists(tmp_path / "metadata_proxy")
    assert not os.listdir(tmp_path / "ns")


def test_handoff_socket_that_cannot_be_set_up_is_a_listen_error(tmp_path, monkeypatch):
    """A failure after the bind (here chmod) is a ListenError naming the path; the
    half-made socket file is removed and nothing is handed over."""
    listeners, handoff = make_handoff_listeners(tmp_path)

    def denied(path, mode):
        raise PermissionError(1, "Operation not permitted", path)

    monkeypatch.setattr("metaproxy.http.listeners.os.chmod", denied)
    with pytest.raises(ListenError, match="cannot listen on .*qrouter-r1.sock: Operation"):
        listeners.add(Namespace.parse("qrouter-r1"))
    assert handoff.calls == [] and os.listdir(tmp_path / "ns") == []
    assert listeners.namespaces == frozenset()


def test_held_socket_bind_failure_leaves_nothing(tmp_path):
    """HeldSocket on a path that cannot be bound raises ListenError and leaves no file."""
    with pytest.raises(ListenError, match="cannot listen on"):
        HeldSocket(str(tmp_path / "missing" / "s.sock"), mode=0o600, backlog=5)
    assert not (tmp_path / "missing").exists()


def test_listeners_need_exactly_one_way_to_serve(tmp_path):
    with pytest.raises(TypeError):
        Listeners(
            MemoryReactorClock(),
            shared_socket=None,
            socket_dir=str(tmp_path),
            mode=0o600,
            backlog=5,
        )
    with pytest.raises(TypeError):
        Listeners(
            MemoryReactorClock(),
            shared_socket=None,
            socket_dir=str(tmp_path),
            mode=0o600,
            backlog=5,
            factory_for=lambda ns: Factory(),
            handoff=RecordingHandoff([]),
        )


def _declare(nsdir, names, age=None):
    for name in names:
        (nsdir / name).touch()
    if age is not None:  # as if the last change was age seconds ago
        then = os.stat(nsdir).st_mtime - age
        os.utime(nsdir, (then, then))


def test_registry_rescan_parses_only_new_names(tmp_path, monkeypatch):
    """A rescan parses only the file names it has not seen before; removed files are
    forgotten."""
    reactor, listeners = make_listeners(tmp_path)
    nsdir = tmp_path / "namespaces.d"
    nsdir.mkdir()
    _declare(nsdir, [f"qrouter-r{i}" for i in range(5)])
    parsed = []
    real_parse = Namespace.parse
    monkeypatch.setattr(
        "metaproxy.agent.registry.Namespace.parse",
        lambda name: parsed.append(name) or real_parse(name),
    )
    registry = NamespaceRegistry(
        reactor, listeners, declared=[], directory=str(nsdir), rescan_interval=1, use_inotify=False
    )
    registry.startService()
    assert len(parsed) == 5 and len(registry.names()) == 5
    _declare(nsdir, ["qdhcp-n9"])
    (nsdir / "qrouter-r0").unlink()
    reactor.advance(1)
    assert parsed[5:] == ["qdhcp-n9"]
    assert registry.names() == ["qdhcp-n9"] + [f"qrouter-r{i}" for i in range(1, 5)]
    registry.stopService()


def test_registry_lists_the_directory_only_when_it_changed(tmp_path, monkeypatch):
    """A directory unchanged since a scan made well after its last change is not listed
    again; a file added or removed later is seen at the next rescan."""
    reactor, listeners = make_listeners(tmp_path)
    nsdir = tmp_path / "namespaces.d"
    nsdir.mkdir()
    _declare(nsdir, ["qrouter-r1", "qrouter-r2"], age=10)
    listed = []
    real_listdir = os.listdir
    monkeypatch.setattr(
        "metaproxy.agent.registry.os.listdir",
        lambda path: listed.append(path) or real_listdir(path),
    )
    registry = NamespaceRegistry(
        reactor,
        listeners,
        declared=[Namespace.parse("qdhcp-n1")],
        directory=str(nsdir),
        rescan_interval=1,
        use_inotify=False,
    )
    registry.startService()
    assert len(listed) == 1
    reactor.advance(1)
    reactor.advance(1)
    assert len(listed) == 1
    assert registry.names() == ["qdhcp-n1", "qrouter-r1", "qrouter-r2"]
    (nsdir / "qrouter-r3").touch()  # changes the directory's mtime to now
    reactor.advance(1)
    assert len(listed) == 2 and "qrouter-r3" in registry.names()
    reactor.advance(1)  # changed too recently to trust the mtime alone: listed again
    assert len(listed) == 3
    (nsdir / "qrouter-r1").unlink()
    reactor.advance(1)
    assert registry.names() == ["qdhcp-n1", "qrouter-r2", "qrouter-r3"]
    registry.stopService()


def test_registry_directory_removed_and_made_again(tmp_path):
    """The watched directory disappearing forgets its namespaces; made again, they are
    read again."""
    import shutil

    reactor, listeners = make_listeners(tmp_path)
    nsdir = tmp_path / "namespaces.d"
    nsdir.mkdir()
    _declare(nsdir, ["qrouter-r1"], age=10)
    registry = NamespaceRegistry(
        reactor, listeners, declared=[], directory=str(nsdir), rescan_interval=1, use_inotify=False
    )
    registry.startService()
    assert registry.names() == ["qrouter-r1"]
    shutil.rmtree(nsdir)
    reactor.advance(1)
    assert registry.names() == []
    nsdir.mkdir()
    _declare(nsdir, ["qrouter-r1"], age=10)
    reactor.advance(1)
    assert registry.names() == ["qrouter-r1"]
    registry.stopService()
