"""metaproxy.chassis.leftovers: the haproxy upstream's agent left in a namespace is
recognised by its pid file and /proc/<pid>/cmdline, and nothing else is signalled."""

import signal

import pytest
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock

from metaproxy.chassis.leftovers import (
    HaproxyLeftovers,
    haproxy_pid_file,
    is_network_haproxy,
    process_cmdline,
    read_pid,
)

NET = "8d6e7e0c-2b7e-4a1d-9a43-6f1c3e2d9b10"
OTHER = "0f2a1c5e-7d34-4e8b-8c6a-2b9d4f1e3a77"
#: upstream's command line: haproxy -f <state_path>/ovn-metadata-proxy/<network>.conf
HAPROXY = ["haproxy", "-f", f"/var/lib/neutron/ovn-metadata-proxy/{NET}.conf"]


def test_pid_file_is_upstreams_name(tmp_path) -> None:
    assert haproxy_pid_file("/var/lib/neutron/external/pids", NET) == (
        f"/var/lib/neutron/external/pids/{NET}.pid.haproxy"
    )


@pytest.mark.parametrize(
    ("cmdline", "ours"),
    [
        (HAPROXY, True),
        (["/usr/sbin/haproxy", "-f", f"/x/{NET}.conf", "-D"], True),
        (["haproxy", "-f", f"/x/{OTHER}.conf"], False),  # another network's
        (["sleep", NET], False),  # names the network, is not haproxy
        (["python3", "/usr/bin/haproxy-wrapper", NET], False),
        ([], False),  # no process, or a zombie
    ],
)
def test_only_a_haproxy_naming_the_network_is_ours(cmdline, ours) -> None:
    assert is_network_haproxy(cmdline, NET) is ours


def test_read_pid_and_cmdline(tmp_path) -> None:
    (tmp_path / "p").write_text("1234\n")
    (tmp_path / "bad").write_text("nope")
    assert read_pid(str(tmp_path / "p")) == 1234
    assert read_pid(str(tmp_path / "bad")) is None
    assert read_pid(str(tmp_path / "missing")) is None
    (tmp_path / "proc" / "77").mkdir(parents=True)
    (tmp_path / "proc" / "77" / "cmdline").write_bytes(b"haproxy\0-f\0/x.conf\0")
    assert process_cmdline(77, str(tmp_path / "proc")) == ["haproxy", "-f", "/x.conf"]
    assert process_cmdline(78, str(tmp_path / "proc")) == []


class FakeHost:
    """/proc and kill(2): a process dies at the signals in C{dies_at}."""

    def __init__(self, root, dies_at=(signal.SIGTERM,)):
        self.proc = root / "proc"
        self.proc.mkdir()
        self.pids = root / "pids"
        self.pids.mkdir()
        self.sent = []
        self.dies_at = dies_at

    def process(self, pid, cmdline):
        (self.proc / str(pid)).mkdir()
        (self.proc / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in cmdline))

    def pid_file(self, network, pid):
        path = self.pids / f"{network}.pid.haproxy"
        path.write_text(f"{pid}\n")
        return path

    def kill(self, pid, sig):
        self.sent.append((pid, sig))
        if not (self.proc / str(pid)).exists():
            raise ProcessLookupError(pid)
        if sig in self.dies_at:
            (self.proc / str(pid) / "cmdline").write_bytes(b"")  # a zombie's


def leftovers(clock, host):
    return HaproxyLeftovers(
        clock, str(host.pids), kill=host.kill, proc_root=str(host.proc), term_wait=1.0
    )


def run(clock, coroutine):
    d = ensureDeferred(coroutine)
    for _ in range(100):
        clock.advance(0.1)
    return d.result


def test_the_networks_haproxy_gets_sigterm_and_its_pid_file_goes(tmp_path) -> None:
    clock, host = Clock(), FakeHost(tmp_path)
    host.process(4242, HAPROXY)
    path = host.pid_file(NET, 4242)
    reaper = leftovers(clock, host)
    assert run(clock, reaper.clear(NET)) is True
    assert host.sent == [(4242, signal.SIGTERM)]
    assert not path.exists()
    assert (reaper.stopped, reaper.killed) == (1, 0)


def test_a_haproxy_that_ignores_sigterm_gets_sigkill_after_the_wait(tmp_path) -> None:
    clock, host = Clock(), FakeHost(tmp_path, dies_at=(signal.SIGKILL,))
    host.process(4242, HAPROXY)
    host.pid_file(NET, 4242)
    reaper = leftovers(clock, host)
    d = ensureDeferred(reaper.clear(NET))
    clock.advance(0.5)
    assert host.sent == [(4242, signal.SIGTERM)]  # still within term_wait
    for _ in range(30):
        clock.advance(0.1)
    assert d.result is True
    assert host.sent == [(4242, signal.SIGTERM), (4242, signal.SIGKILL)]
    assert (reaper.stopped, reaper.killed) == (1, 1)


@pytest.mark.parametrize(
    "cmdline",
    [
        ["haproxy", "-f", f"/var/lib/neutron/ovn-metadata-proxy/{OTHER}.conf"],
        ["sshd", "-D"],
    ],
)
def test_a_pid_now_held_by_a_stranger_is_never_signalled(tmp_path, cmdline) -> None:
    clock, host = Clock(), FakeHost(tmp_path)
    host.process(4242, cmdline)
    path = host.pid_file(NET, 4242)
    reaper = leftovers(clock, host)
    assert run(clock, reaper.clear(NET)) is False
    assert host.sent == []
    assert not path.exists()  # stale: removed
    assert (host.proc / "4242" / "cmdline").read_bytes() != b""
    assert reaper.stopped == 0


def test_no_pid_file_or_a_dead_pid_signals_nothing(tmp_path) -> None:
    clock, host = Clock(), FakeHost(tmp_path)
    reaper = leftovers(clock, host)
    assert run(clock, reaper.clear(NET)) is False
    path = host.pid_file(NET, 999)  # no such process
    assert run(clock, reaper.clear(NET)) is False
    assert host.sent == [] and not path.exists()


def test_a_haproxy_that_may_not_be_signalled_is_left_and_said(tmp_path) -> None:
    clock, host = Clock(), FakeHost(tmp_path)
    host.process(4242, HAPROXY)
    path = host.pid_file(NET, 4242)

    def denied(pid, sig):
        host.sent.append((pid, sig))
        raise PermissionError(1, "Operation not permitted")

    reaper = HaproxyLeftovers(clock, str(host.pids), kill=denied, proc_root=str(host.proc))
    assert run(clock, reaper.clear(NET)) is False
    assert host.sent == [(4242, signal.SIGTERM)]  # not SIGKILL as well
    assert path.exists() and reaper.stopped == 0
