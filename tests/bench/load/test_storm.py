"""The storm's requests, answer parsing, answer checks, and a worker against in-process
servers that answer right, wrong, or not at all."""

import asyncio
import os
import shutil
import socket
import tempfile
import time

import pytest

from bench.fakes.nova.instances import instances_from_table
from bench.fakes.novatree import error_page, lookup
from bench.load import storm, storm_worker
from bench.load.answer_parser import AnswerParser, BadHTTP, ClosedEarly, find_head_end
from bench.load.checks import (
    BACKLOG_FULL,
    BAD_HTTP,
    BARE_LF,
    BOOT_CLEAN,
    BOOT_FAILED,
    BOOT_WRONG,
    CLOSED,
    CONNECT_ERROR,
    KINDS,
    OK,
    REFUSALS,
    REFUSED,
    STATUS,
    TIMEOUT,
    TRAILING,
    WRONG_BODY,
    WRONG_INSTANCE,
    check_answer,
    framing_name,
    kind_name,
)
from bench.load.cloudinit import boot_sequence
from bench.load.fleet import boot_length, make_fleet
from bench.load.report import REFUSAL_KINDS
from bench.load.storm import StormConfig
from bench.load.targets import NamespaceSockets, SharedSocket, request_bytes
from bench.load.unixhttp import parse_answer
from metaproxy.caller import identify
from metaproxy.http.request import RequestParser
from metaproxy.namespace import namespace_socket_path

FLEET = make_fleet(12, 3, dhcp_networks=1)
RECORDS = instances_from_table(FLEET.table)


# ---- request bytes


@pytest.mark.parametrize("keepalive", [False, True])
def test_request_is_what_haproxy_forwards(keepalive):
    """The agent's own parser and caller identification read the instance's namespace
    and address from the bytes; X-Forwarded-For is the last header."""
    instance = FLEET.instances[4]
    data = request_bytes(
        "/openstack/2018-08-27/meta_data.json",
        SharedSocket("/x").headers(instance),
        keepalive=keepalive,
    )
    assert data.startswith(
        b"GET /openstack/2018-08-27/meta_data.json HTTP/1.1\r\nHost: 169.254.169.254\r\n"
    )
    assert data.endswith(b"X-Forwarded-For: " + instance.ip.encode() + b"\r\n\r\n")
    request = RequestParser().feed(data)
    assert request is not None and request.method == b"GET"
    assert (b"connection", b"close") in request.headers or keepalive
    assert (b"connection" in dict(request.headers)) is not keepalive
    identity = identify(request, None)
    assert identity.namespace == instance.namespace and identity.ip == instance.ip
    assert request.headers[-1] == (b"x-forwarded-for", instance.ip.encode())


def test_namespace_target_connects_to_the_namespace_socket(sock_dir):
    instance = FLEET.instances[2]
    path = namespace_socket_path(sock_dir, instance.namespace)
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen(1)
        sock = asyncio.run(NamespaceSockets(sock_dir).open(instance))
        try:
            assert sock.getpeername() == path
        finally:
            sock.close()


# ---- answer parsing

ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n"
    b"Connection: close\r\n\r\nhello world"
)


def test_answer_split_at_every_byte():
    for cut in range(1, len(ANSWER)):
        parser = AnswerParser()
        assert parser.feed(ANSWER[:cut]) is None
        answer = parser.feed(ANSWER[cut:])
        assert answer is not None and answer.status == 200 and answer.body == b"hello world"
        assert answer.close and answer.header(b"content-type") == b"text/plain"


def test_answer_read_to_eof_without_content_length():
    parser = AnswerParser()
    assert parser.feed(b"HTTP/1.0 404 Not Found\r\nX: y\r\n\r\npart") is None
    assert parser.feed(b" two") is None
    answer = parser.eof()
    assert answer.status == 404 and answer.body == b"part two" and answer.close


def test_chunked_answer_in_pieces_and_interim_100():
    data = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n"
    )
    parser = AnswerParser()
    answers = [parser.feed(data[i : i + 3]) for i in range(0, len(data), 3)]
    assert all(a is None for a in answers[:-1])
    assert answers[-1].body == b"hello world" and not answers[-1].close


def test_keep_alive_answer_is_reusable_and_extra_bytes_are_not():
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    assert AnswerParser().feed(head).close is False
    assert AnswerParser().feed(head + b"HTTP/1.1 200").close is True


@pytest.mark.parametrize(
    "data",
    [
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"HTTP/1.1 2OO OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nbad header line\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
    ],
)
def test_malformed_answers_are_bad_http(data):
    with pytest.raises(BadHTTP):
        AnswerParser().feed(data)


def test_eof_before_and_within_an_answer():
    with pytest.raises(ClosedEarly):
        AnswerParser().eof()
    parser = AnswerParser()
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
    with pytest.raises(BadHTTP, match="5 of 10"):
        parser.eof()
    parser = AnswerParser()
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-")
    with pytest.raises(BadHTTP, match="head"):
        parser.eof()


# ---- answers as upstream's agent writes them

#: Upstream's own 404 (neutron.common.metadata.encode_http_reponse), byte for byte: a
#: jinja template with bare LF line ends.
UPSTREAM_404 = (
    b"HTTP/1.1 404 Not Found\nContent-Type: text/plain; charset=UTF-8\n"
    b"Connection: close\nContent-Length: 191\n\n<html>\n <head>\n  <title>404 Not "
    b"Found</title>\n </head>\n <body>\n  <h1>404 Not Found</h1>\n  Instance was not "
    b"found on router e3e70682-c209-4cac-a29f-6fbed82c07cd.<br /><br />\n\n\n"
    b" </body>\n</html>"
)


def test_bare_lf_answer_split_at_every_byte():
    body = UPSTREAM_404.partition(b"\n\n")[2]
    assert len(body) == 191
    for cut in range(1, len(UPSTREAM_404)):
        parser = AnswerParser()
        first = parser.feed(UPSTREAM_404[:cut])
        answer = first or parser.feed(UPSTREAM_404[cut:])
        assert first is None or cut == len(UPSTREAM_404)
        assert answer is not None, cut
        assert (answer.status, answer.body, answer.bare_lf, answer.trailing) == (404, body, True, 0)
        assert answer.close and answer.header(b"content-length") == b"191"


def test_crlf_answers_are_not_bare_lf():
    answer = AnswerParser().feed(ANSWER)
    assert not answer.bare_lf and answer.trailing == 0
    # one bare LF among CRLFs is enough to count
    mixed = AnswerParser().feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\n\r\nok")
    assert (mixed.status, mixed.body, mixed.bare_lf) == (200, b"ok", True)


def test_bare_lf_head_read_to_eof_and_1xx():
    parser = AnswerParser()
    assert (
        parser.feed(b"HTTP/1.1 100 Continue\n\nHTTP/1.0 503 Service Unavailable\nX: y\n\nretry\n")
        is None
    )
    answer = parser.eof()
    assert (answer.status, answer.body, answer.bare_lf) == (503, b"retry\n", True)


def test_bytes_after_an_empty_200_are_counted():
    """Upstream adds CRLF CRLF after an answer with an empty body in some versions: the
    answer is taken (an empty 200) and the extra bytes counted, in the same read or later."""
    data = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n"
    answer = AnswerParser().feed(data + b"\r\n\r\n")
    assert (answer.status, answer.body, answer.trailing, answer.close) == (200, b"", 4, True)
    parser = AnswerParser()
    assert parser.feed(data).trailing == 0
    assert parser.feed(b"\r\n").trailing == 2 and parser.done.close


def test_head_end():
    assert find_head_end(b"HTTP/1.1 200 OK\r\nA: b\r\n") is None
    assert find_head_end(b"HTTP/1.1 200 OK\r\n\r\nbody") == (17, 19)
    assert find_head_end(b"HTTP/1.1 200 OK\n\nbody") == (16, 17)
    # the first blank line counts, whichever its kind
    assert find_head_end(b"HTTP/1.1 200 OK\n\nx\r\n\r\n") == (16, 17)
    assert find_head_end(b"HTTP/1.1 200 OK\r\n\r\nx\n\n") == (17, 19)


def test_unixhttp_parses_bare_lf_heads():
    answer = parse_answer(UPSTREAM_404)
    assert (answer.status, answer.reason, answer.bare_lf) == (404, "Not Found", True)
    assert answer.header("Content-Type") == "text/plain; charset=UTF-8"
    assert b"Instance was not found on router" in answer.body
    crlf = parse_answer(ANSWER)
    assert (crlf.status, crlf.body, crlf.bare_lf) == (200, b"hello world", False)
    with pytest.raises(ValueError, match="incomplete"):
        parse_answer(b"HTTP/1.1 404 Not Found\nContent-Length: 0\n")
    with pytest.raises(ValueError, match="Content-Length"):
        parse_answer(UPSTREAM_404[:-1])


def test_framing_names():
    assert framing_name(BARE_LF) == "bare LF line ends"
    assert framing_name(TRAILING) == "bytes after the answer"
    assert framing_name(BARE_LF | TRAILING) == "bare LF line ends, bytes after the answer"


def test_refusal_kinds():
    """Refusals are their own kinds, apart from timeouts and status errors, and the
    report counts exactly those."""
    assert REFUSALS == {REFUSED, BACKLOG_FULL}
    assert {KINDS[k] for k in REFUSALS} == set(REFUSAL_KINDS)
    assert not {TIMEOUT, CLOSED, CONNECT_ERROR, STATUS} & REFUSALS


# ---- answer checks


def nova_fetch(instance):
    record = RECORDS[instance.instance_id]

    def fetch(path):
        status, _, body = lookup(record, path, address=instance.ip)
        return status, body

    return fetch


def replay(instance, fetch):
    """Run cloud-init's sequence with C{fetch}, checking each answer for C{instance}."""
    sequence, kinds = boot_sequence(), {}
    path = next(sequence)
    while True:
        status, body = fetch(path)
        kinds[path] = check_answer(path, status, body, instance)
        try:
            path = sequence.send((status, body))
        except StopIteration:
            return kinds


@pytest.mark.parametrize("index", range(6))  # text, text, none, gzip, text, no keypair
def test_right_answers_pass(index):
    instance = FLEET.instances[index]
    kinds = replay(instance, nova_fetch(instance))
    assert set(kinds.values()) == {OK}
    assert len(kinds) == (28 if instance.public_keys else 26) - 1  # /openstack asked twice


def test_another_instances_answers_are_wrong_instance_or_body():
    """The instance at the same address behind another router: every identifying answer
    is caught."""
    me, neighbour = FLEET.instances[0], FLEET.instances[1]
    assert me.ip == neighbour.ip and me.namespace != neighbour.namespace
    kinds = replay(me, nova_fetch(neighbour))
    wrong = {path: kind for path, kind in kinds.items() if kind != OK}
    assert wrong == {
        "/openstack/2018-08-27/meta_data.json": WRONG_INSTANCE,
        "/openstack/2018-08-27/user_data": WRONG_BODY,
        "/latest/meta-data/hostname": WRONG_INSTANCE,
        "/latest/meta-data/instance-id": WRONG_INSTANCE,
        "/latest/meta-data/local-hostname": WRONG_INSTANCE,
        "/latest/meta-data/public-keys/0/openssh-key": WRONG_INSTANCE,
    }


def test_user_data_checks():
    gzipped = next(i for i in FLEET.instances if i.user_data and i.user_data[:2] == b"\x1f\x8b")
    none = next(i for i in FLEET.instances if i.user_data is None)
    path = "/openstack/2018-08-27/user_data"
    import gzip

    assert check_answer(path, 200, gzipped.user_data, gzipped) == OK
    assert check_answer(path, 200, gzip.decompress(gzipped.user_data), gzipped) == WRONG_BODY
    assert check_answer(path, 404, error_page(404), gzipped) == STATUS
    assert check_answer(path, 404, error_page(404), none) == OK
    assert check_answer(path, 200, b"#cloud-config\n", none) == WRONG_BODY
    assert check_answer(path, 500, b"", none) == STATUS


def test_wrong_status_and_other_checks():
    instance = FLEET.instances[3]
    assert check_answer("/openstack", 403, error_page(403), instance) == STATUS
    assert kind_name(STATUS, 403) == "status 403"
    assert (
        check_answer("/latest/meta-data/local-ipv4", 200, b"10.9.9.9", instance) == WRONG_INSTANCE
    )
    assert check_answer("/latest/meta-data/local-ipv4", 200, instance.ip.encode(), instance) == OK
    assert (
        check_answer("/openstack/2018-08-27/meta_data.json", 200, b"<html>", instance) == WRONG_BODY
    )
    assert (
        check_answer("/latest/meta-data/public-keys/1/openssh-key", 200, b"x", instance)
        == WRONG_INSTANCE
    )


# ---- a worker against in-process servers


class _Out:
    def __init__(self):
        self.messages = []

    def put(self, message):
        self.messages.append(message)


def run_worker(
    target, *, instances=None, keepalive=False, timeout=5.0, concurrency=3, server=None, path=None
):
    instances = FLEET.instances if instances is None else instances
    boots = tuple(enumerate(instances))
    spec = storm_worker.WorkerSpec(
        index=0,
        target=target,
        boots=boots,
        total_boots=len(boots),
        concurrency=concurrency,
        ramp=0.0,
        keepalive=keepalive,
        request_timeout=timeout,
    )
    out = _Out()

    async def main():
        listening = None
        if server is not None:
            listening = await asyncio.start_unix_server(server, path)
        try:
            await storm_worker.Worker(spec, out, time.monotonic()).run()
        finally:
            if listening is not None:
                listening.close()

    asyncio.run(main())
    collector = storm._Collector(len(boots), 1)
    for kind, index, payload in out.messages:
        assert kind == "batch"
        collector.add(index, payload)
    return collector


def nova_server(*, keepalive=False, answer_as=None, bare_lf_errors=False):
    """A server that answers as the agent would with the fake Nova behind it (or as if
    every caller were C{answer_as(instance)}); with C{bare_lf_errors}, statuses other
    than 200 are written with bare LF line ends, as upstream writes its own."""
    by_caller = {(i.namespace, i.ip): i for i in FLEET.instances}

    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request = RequestParser().feed(head)
                identity = identify(request, None)
                instance = by_caller[(identity.namespace, identity.ip)]
                if answer_as is not None:
                    instance = answer_as(instance)
                status, content_type, body = lookup(
                    RECORDS[instance.instance_id], request.target.decode(), address=identity.ip
                )
                head = b"HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n" % (
                    status,
                    content_type.encode(),
                    len(body),
                    b"" if keepalive else b"Connection: close\r\n",
                )
                if bare_lf_errors and status != 200:
                    head = head.replace(b"\r\n", b"\n")
                writer.write(head + body)
                await writer.drain()
                if not keepalive:
                    break
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    return handle


@pytest.fixture
def sock_dir():
    path = tempfile.mkdtemp(prefix="mpt-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_worker_right_answers(sock_dir):
    path = os.path.join(sock_dir, "s")
    c = run_worker(SharedSocket(path), server=nova_server(), path=path)
    assert set(c.r_kind) == {OK}
    assert sum(c.b_requests) == len(c.r_kind) == c.connections
    lengths = dict(zip(c.b_boot, c.b_requests, strict=False))
    assert [lengths[i] for i in range(len(FLEET))] == boot_length(FLEET)
    assert set(c.b_outcome) == {BOOT_CLEAN}


def test_worker_takes_bare_lf_answers_and_flags_them(sock_dir):
    """Upstream's bare-LF 404 for absent user data is the right answer, and flagged."""
    path = os.path.join(sock_dir, "s")
    c = run_worker(SharedSocket(path), server=nova_server(bare_lf_errors=True), path=path)
    assert set(c.r_kind) == {OK}
    no_user_data = sum(1 for i in FLEET.instances if i.user_data is None)
    assert no_user_data and list(c.r_flags).count(BARE_LF) == no_user_data
    assert set(c.r_flags) == {0, BARE_LF}
    assert [s for s, f in zip(c.r_status, c.r_flags, strict=False) if f] == [404] * no_user_data


def test_worker_keepalive_reuses_a_connection_per_boot(sock_dir):
    path = os.path.join(sock_dir, "s")
    c = run_worker(
        SharedSocket(path), keepalive=True, server=nova_server(keepalive=True), path=path
    )
    assert set(c.r_kind) == {OK}
    assert c.connections == len(FLEET)
    # an agent that closes after each answer: one connection per request anyway
    c = run_worker(SharedSocket(path), keepalive=True, server=nova_server(), path=path)
    assert set(c.r_kind) == {OK} and c.connections == len(c.r_kind)


def test_worker_wrong_instance_is_counted_and_the_boot_goes_on(sock_dir):
    path = os.path.join(sock_dir, "s")
    neighbours = {FLEET.instances[0].instance_id: FLEET.instances[1]}
    c = run_worker(
        SharedSocket(path),
        instances=FLEET.instances[:1],
        path=path,
        server=nova_server(answer_as=lambda i: neighbours.get(i.instance_id, i)),
    )
    assert list(c.b_outcome) == [BOOT_WRONG]
    assert c.r_kind.count(WRONG_INSTANCE) == 5 and c.r_kind.count(WRONG_BODY) == 1
    assert len(c.r_kind) == 28


def _fixed_server(data, *, close=True, wait=False):
    async def handle(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        if wait:
            await asyncio.sleep(3600)
        writer.write(data)
        if close:
            writer.close()

    return handle


@pytest.mark.parametrize(
    "data, kind, status",
    [
        (b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", STATUS, 403),
        (b"", CLOSED, 0),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\ncut short", BAD_HTTP, 0),
        (b"220 smtp.example ESMTP\r\n", BAD_HTTP, 0),
    ],
)
def test_worker_failures_end_the_boot(sock_dir, data, kind, status):
    path = os.path.join(sock_dir, "s")
    c = run_worker(
        SharedSocket(path), instances=FLEET.instances[:4], path=path, server=_fixed_server(data)
    )
    assert list(c.r_kind) == [kind] * 4 and list(c.r_status) == [status] * 4
    assert list(c.b_outcome) == [BOOT_FAILED] * 4 and list(c.b_requests) == [1] * 4
    assert set(c.b_kind) == {kind}


def test_worker_timeout(sock_dir):
    path = os.path.join(sock_dir, "s")
    c = run_worker(
        SharedSocket(path),
        instances=FLEET.instances[:2],
        path=path,
        timeout=0.2,
        server=_fixed_server(b"", close=False, wait=True),
    )
    assert list(c.r_kind) == [TIMEOUT, TIMEOUT] and all(v < 0 for v in c.r_latency)


def test_worker_refused_and_missing_socket(sock_dir):
    path = os.path.join(sock_dir, "bound-not-listening")
    with socket.socket(socket.AF_UNIX) as bound:
        bound.bind(path)
        c = run_worker(SharedSocket(path), instances=FLEET.instances[:2])
    assert list(c.r_kind) == [REFUSED, REFUSED] and c.connections == 0
    c = run_worker(SharedSocket(os.path.join(sock_dir, "nothing")), instances=FLEET.instances[:2])
    assert list(c.r_kind) == [CONNECT_ERROR, CONNECT_ERROR]


def test_worker_backlog_full(sock_dir):
    """A listener that never accepts, its queue filled: EAGAIN on connect is a refusal
    ('backlog full'), not waited out, and ends the boot."""
    path = os.path.join(sock_dir, "full")
    fillers = []
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen(0)
        try:
            for _ in range(64):
                sock = socket.socket(socket.AF_UNIX)
                sock.setblocking(False)
                fillers.append(sock)
                try:
                    sock.connect(path)
                except BlockingIOError:
                    break
            else:
                pytest.fail("the listen queue never filled")
            c = run_worker(SharedSocket(path), instances=FLEET.instances[:3], timeout=5.0)
        finally:
            for sock in fillers:
                sock.close()
    assert list(c.r_kind) == [BACKLOG_FULL] * 3 and c.connections == 0
    assert kind_name(BACKLOG_FULL) == "backlog full"
    assert list(c.b_outcome) == [BOOT_FAILED] * 3 and all(v < 0 for v in c.r_latency)


def test_config_checks():
    with pytest.raises(ValueError):
        StormConfig(instances=1, routers=1, target="elsewhere")
    with pytest.raises(ValueError, match="shared_socket"):
        StormConfig(instances=1, routers=1).make_target()
    assert StormConfig(
        instances=1, routers=1, target="namespaces", namespace_socket_dir="/d"
    ).make_target() == NamespaceSockets("/d")


# ---- how the agent is measured: /proc


def _fake_proc(root, pid, ppid, comm, utime, stime, cutime, cstime, rss_kib, hwm_kib):
    (root / str(pid)).mkdir()
    fields = ["S", str(ppid)] + ["0"] * 9 + [str(utime), str(stime), str(cutime), str(cstime)]
    (root / str(pid) / "stat").write_text(f"{pid} ({comm}) " + " ".join(fields + ["20"] * 5))
    (root / str(pid) / "status").write_text(
        f"Name:\t{comm}\nVmHWM:\t{hwm_kib} kB\nVmRSS:\t{rss_kib} kB\n"
    )


def test_procstat_sums_a_tree_from_proc(tmp_path):
    from bench.load import procstat

    ticks = os.sysconf("SC_CLK_TCK")
    _fake_proc(tmp_path, 10, 1, "twistd", 100, 50, 10, 5, 1000, 1500)
    _fake_proc(tmp_path, 11, 10, "odd) name (x", 20, 10, 0, 0, 300, 400)  # a child
    _fake_proc(tmp_path, 12, 11, "w", 6, 4, 0, 0, 200, 200)  # a grandchild
    _fake_proc(tmp_path, 20, 1, "other", 999, 999, 0, 0, 9999, 9999)  # not in the tree
    assert procstat.descendants([10], str(tmp_path)) == {11, 12}
    assert procstat.tree_pids([10, 404], str(tmp_path)) == {10, 11, 12}  # 404 is gone
    assert procstat.tree_cpu_seconds([10], str(tmp_path)) == pytest.approx((165 + 30 + 10) / ticks)
    assert procstat.tree_rss_bytes([10], str(tmp_path)) == 1500 * 1024
    sample = procstat.ProcSample([10], str(tmp_path))
    assert (sample.rss, sample.hwm) == (1500 * 1024, 1500 * 1024)


def test_procstat_on_live_processes():
    """A real child and grandchild: both found, their CPU and memory counted."""
    import subprocess
    import sys

    from bench.load import procstat

    marker = tempfile.mktemp(prefix="mpt-")
    inner = f"x = sum(range(5_000_000)); open({marker!r}, 'w').close(); import time; time.sleep(60)"
    code = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {inner!r}])"
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        while not os.path.exists(marker):
            assert child.poll() is None
            time.sleep(0.05)
        [grandchild] = procstat.descendants([child.pid])
        assert procstat.process_cpu_seconds(grandchild) > 0
        assert procstat.tree_cpu_seconds([child.pid]) >= procstat.process_cpu_seconds(grandchild)
        with procstat.PeakRSS([child.pid], interval=0.01) as peak:
            pass
        assert peak.max_processes == 2
        assert peak.peak_bytes == pytest.approx(
            procstat.rss_bytes(child.pid) + procstat.rss_bytes(grandchild), rel=0.5
        )
        busy, total = procstat.host_cpu_times()
        assert 0 < busy < total
    finally:
        for pid in procstat.tree_pids([child.pid]):
            os.kill(pid, 9)
        child.wait()
        os.unlink(marker)
