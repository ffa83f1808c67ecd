"""Operations on the real agent: metrics, health, `metaproxy health`, JSON logs without
secrets, SIGTERM drain (exit 0), with and without worker processes."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from bench.load.unixhttp import get, send_raw
from tests.integration.conftest import SECRET, start_stack


def _http_unix(path: str, target: str) -> tuple[int, bytes]:
    answer = send_raw(
        path, [f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()]
    )
    return answer.status, answer.body


def _metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        m = re.fullmatch(re.escape(name) + r"(?:\{(.*)\})? (\S+)", line)
        if m is None:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(m.group(2))
    raise AssertionError(f"{name} {labels} not in:\n{text}")


def _wait(predicate, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (AssertionError, OSError):
            pass  # not there yet (the metrics socket listens a moment after the shared one)
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "metaproxy.cli", *args], capture_output=True, text=True, timeout=30
    )


def _ask(stack, xff="10.0.0.5", router="r1"):
    return get(
        stack.shared,
        "/openstack/latest/meta_data.json",
        forwarded_for=xff,
        headers=[("X-Neutron-Router-ID", router)],
    )


class _Stopping:
    """Stops the stack, then removes the metrics socket's directory."""

    def __init__(self, stack, sock_dir: str) -> None:
        self._stack, self._dir = stack, sock_dir

    def __getattr__(self, name):
        return getattr(self._stack, name)

    def stop(self) -> None:
        try:
            self._stack.stop()
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)


def _start(extra: str = "", **kw):
    """A stack serving metrics on a Unix socket in a directory of its own."""
    sock_dir = tempfile.mkdtemp(prefix="mpm-", dir="/tmp")
    sock = f"{sock_dir}/m.sock"
    try:
        stack = start_stack("ops", extra_metaproxy=f"metrics_listen = unix:{sock}\n" + extra, **kw)
    except BaseException:
        shutil.rmtree(sock_dir, ignore_errors=True)
        raise
    stopping = _Stopping(stack, sock_dir)
    try:
        _wait(lambda: Path(sock).exists(), what="the metrics socket")
    except BaseException:
        stopping.stop()
        raise
    return stopping, sock


def test_metrics_count_requests_lookups_pool_and_refusals():
    stack, sock = _start("health_probe_interval = 1\n")
    try:
        assert _ask(stack).status == 200
        assert _ask(stack).status == 200
        assert _ask(stack, xff="10.9.9.9").status == 404
        big = ("GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + "a" * 20000 + "\r\n\r\n").encode()
        assert send_raw(stack.shared, [big]).status == 431
        status, body = _http_unix(sock, "/metrics")
        text = body.decode()
        assert status == 200
        assert _metric(text, "metaproxy_requests_total", socket="shared", status="200") == 2
        assert _metric(text, "metaproxy_requests_total", socket="shared", status="404") == 1
        assert _metric(text, "metaproxy_requests_total", socket="shared", status="431") == 1
        assert _metric(text, "metaproxy_refused_requests_total", reason="headers_too_large") == 1
        assert _metric(text, "metaproxy_request_duration_seconds_count") == 4
        assert _metric(text, "metaproxy_lookups_total", result="miss") >= 1
        assert _metric(text, "metaproxy_nova_connections", state="idle") >= 1
        assert _metric(text, "metaproxy_lookup_backend_ready") == 1
        stack.agent.popen.send_signal(signal.SIGHUP)
        _wait(
            lambda: (
                _metric(
                    _http_unix(sock, "/metrics")[1].decode(),
                    "metaproxy_reloads_total",
                    outcome="ok",
                )
                == 1
            ),
            what="a reload",
        )
        assert _http_unix(sock, "/nothing")[0] == 404
    finally:
        stack.stop()


def test_healthz_and_health_command_follow_nova():
    stack, sock = _start("health_probe_interval = 1\n")
    config = str(stack.root / "agent.ini")
    try:
        _wait(lambda: _http_unix(sock, "/healthz")[0] == 200, what="healthy")
        status, body = _http_unix(sock, "/healthz")
        answer = json.loads(body)
        assert answer["status"] == "ok"
        assert answer["checks"]["nova"]["ok"] and answer["checks"]["lookups"]["ok"]
        done = _cli("health", "--config-file", config)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["status"] == "ok"
        stack.nova.stop()
        _wait(lambda: _http_unix(sock, "/healthz")[0] == 503, what="unhealthy")
        answer = json.loads(_http_unix(sock, "/healthz")[1])
        assert answer["status"] == "unhealthy" and not answer["checks"]["nova"]["ok"]
        assert "refused" in answer["checks"]["nova"]["detail"]
        done = _cli("health", "--config-file", config)
        assert done.returncode == 1
        assert json.loads(done.stdout)["checks"]["nova"]["ok"] is False
    finally:
        stack.stop()
    done = _cli("health", "--listen", f"unix:{sock}")
    assert done.returncode == 1 and "cannot ask" in done.stderr


def test_metrics_on_loopback_tcp():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    stack = start_stack("opstcp", extra_metaproxy=f"metrics_listen = {port}\n")
    try:
        _wait(lambda: _cli("health", "--listen", str(port)).returncode == 0, what="healthy")
        conn = socket.create_connection(("127.0.0.1", port), timeout=5)
        conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
        conn.close()
        assert data.startswith(b"HTTP/1.1 200") and b"metaproxy_requests_total" in data
    finally:
        stack.stop()


def test_json_logs_never_hold_the_secret_or_a_signature():
    """use_json and debug on; failures logged one JSON object per line; no secret."""
    import hashlib
    import hmac

    stack = start_stack(
        "opsjson", extra_default="use_json = true\ndebug = true\n", agent_secret="agent-secret-xyz"
    )
    try:
        assert _ask(stack).status == 403  # Nova refuses the agent's signature
        assert _ask(stack, xff="10.9.9.9").status == 404
        assert send_raw(stack.shared, [b"BAD\r\n\r\n"]).status == 400
        _wait(lambda: "Refused a malformed request" in stack.agent.log(), what="log lines")
        log = stack.agent.log()
        records = [json.loads(line) for line in log.splitlines() if line.strip()]
        messages = [r["message"] for r in records]
        assert any("shared secrets do not match" in m for m in messages)
        assert any("No port found" in m and "10.9.9.9" in m for m in messages)
        refused = [r for r in records if "Refused a malformed request" in r["message"]]
        assert refused and refused[0]["level"] == "warn"
        signature = hmac.new(b"agent-secret-xyz", b"vm-a", hashlib.sha256).hexdigest()
        for forbidden in ("agent-secret-xyz", SECRET, signature):
            assert forbidden not in log
    finally:
        stack.stop()


def test_sigterm_finishes_the_request_in_flight_and_exits_0():
    """A request in flight at SIGTERM gets its 200; the agent exits 0 once it is done."""
    stack = start_stack(
        "opsdrain", nova_args=["--delay", "1.5"], extra_metaproxy="drain_timeout = 10\n"
    )
    result: dict = {}
    try:

        def ask():
            result["answer"] = _ask(stack)

        thread = threading.Thread(target=ask)
        thread.start()
        _wait(
            lambda: stack.nova_control("stats")["in_service"] == 1,
            what="the request at the slow Nova",
        )
        stack.agent.popen.send_signal(signal.SIGTERM)
        code = stack.agent.popen.wait(15)
        thread.join(15)
        assert result["answer"].status == 200, result
        assert code == 0, stack.agent.log()[-2000:]
        log = stack.agent.log()
        assert "waiting up to 10" in log and "Drained" in log
    finally:
        stack.stop()


def test_workers_metrics_add_up_and_sigterm_exits_0():
    stack, sock = _start(
        "health_probe_interval = 1\ndrain_timeout = 5\n", extra_default="metadata_workers = 2\n"
    )
    try:
        for _ in range(6):
            assert _ask(stack).status == 200
        # each worker reports every 5 s
        _wait(
            lambda: (
                _metric(
                    _http_unix(sock, "/metrics")[1].decode(),
                    "metaproxy_requests_total",
                    socket="shared",
                    status="200",
                )
                == 6
            ),
            timeout=20,
            what="the workers' reports",
        )
        text = _http_unix(sock, "/metrics")[1].decode()
        assert _metric(text, "metaproxy_serving_processes") == 2
        _wait(lambda: _http_unix(sock, "/healthz")[0] == 200, what="healthy")
        checks = json.loads(_http_unix(sock, "/healthz")[1])["checks"]
        assert checks["workers"]["detail"] == "2 of 2 running"
        stack.agent.popen.send_signal(signal.SIGTERM)
        assert stack.agent.popen.wait(20) == 0
    finally:
        stack.stop()


def test_workers_rate_limit_counters_add_up():
    """Each worker limits with its own rate limiter; the agent scrapes their refusals
    added up: as many as the 429 answers the source got."""
    stack, sock = _start(
        "\n[metadata_rate_limiting]\nrate_limit_enabled = true\n"
        "base_window_duration = 60\nbase_query_rate_limit = 2\n"
        "burst_window_duration = 60\nburst_query_rate_limit = 2\n",
        extra_default="metadata_workers = 2\n",
    )
    try:
        statuses = [_ask(stack).status for _ in range(10)]
        assert set(statuses) == {200, 429}, statuses
        refused = statuses.count(429)

        def scraped() -> bool:
            text = _http_unix(sock, "/metrics")[1].decode()
            return (
                _metric(text, "metaproxy_rate_limited_total") == refused
                and _metric(text, "metaproxy_rate_limit_evicted_sources_total") == 0
            )

        # each worker reports every 5 s
        _wait(scraped, timeout=20, what="the workers' rate limit counters")
    finally:
        stack.stop()


def test_sighup_reloads_the_log_level():
    stack = start_stack("opsdebug")
    try:
        config = stack.root / "agent.ini"
        text = config.read_text()
        assert "debug" not in text
        config.write_text(text.replace("[DEFAULT]\n", "[DEFAULT]\ndebug = true\n", 1))
        # SIGHUP is handled once the service has started (it logs this line)
        _wait(lambda: "metaproxy serving" in stack.agent.log(), what="the start line")
        stack.agent.popen.send_signal(signal.SIGHUP)
        _wait(lambda: "Log level now debug" in stack.agent.log(), what="the debug line")
        assert "#debug]" in stack.agent.log()
    finally:
        stack.stop()


def _twistd_metaproxy(root: Path, *args: str) -> subprocess.Popen:
    """`twistd -n metaproxy ARGS` with no --logfile of twistd's; its standard output and
    error go to root/stdout."""
    with open(root / "stdout", "wb") as out:
        return subprocess.Popen(
            [
                str(Path(sys.executable).with_name("twistd")),
                "--nodaemon",
                "--pidfile=",
                "metaproxy",
                *args,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=str(root),
        )


def _stop(process: subprocess.Popen) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def _agent_config(root: Path, extra_default: str = "") -> Path:
    table = root / "ports.json"
    table.write_text(json.dumps({"routers": {}, "ports": [], "instances": {}}))
    config = root / "agent.ini"
    config.write_text(
        f"[DEFAULT]\nstate_path = {root}/s\nnova_metadata_port = 9\n{extra_default}"
        f"[metaproxy]\nlookup_table = {table}\n"
    )
    return config


@pytest.mark.parametrize("workers", [0, 2])
def test_log_file_from_the_configuration_and_reopened_on_sigusr1(workers):
    """[DEFAULT] log_file: the agent's lines go there (and not to standard output); after
    logrotate renames the file, SIGUSR1 makes the agent write a new one."""
    root = Path(tempfile.mkdtemp(prefix="mp-log-", dir="/tmp"))
    log = root / "agent.log"
    config = _agent_config(root, f"log_file = {log}\nmetadata_workers = {workers}\n")
    agent = _twistd_metaproxy(root, "--config-file", str(config))
    try:
        _wait(lambda: "Log lines go to file" in _text(log), what="the start lines")
        assert f"Log lines go to file {log}" in _text(log)
        assert "metaproxy serving" in _text(log)
        shared = str(root / "s" / "metadata_proxy")
        assert send_raw(shared, [b"FIRST\r\n\r\n"]).status == 400
        _wait(lambda: "Refused a malformed request" in _text(log), what="the first")
        log.rename(root / "agent.log.1")  # logrotate
        agent.send_signal(signal.SIGUSR1)
        _wait(log.exists, what="the reopened file")
        assert send_raw(shared, [b"SECOND\r\n\r\n"]).status == 400
        _wait(lambda: "Refused a malformed request" in _text(log), what="the second")
        old = (root / "agent.log.1").read_text()
        assert old.count("Refused a malformed request") == 1
        assert _text(log).count("Refused a malformed request") == 1
        assert "metaproxy serving" not in (root / "stdout").read_text()
        assert _stop(agent) == 0
        assert "Drained" in _text(log)
    finally:
        _stop(agent)
        shutil.rmtree(root, ignore_errors=True)


def test_log_file_on_the_command_line_as_the_units_pass_it():
    """--log-file (oslo.log's command-line form) wins over [DEFAULT] log_file."""
    root = Path(tempfile.mkdtemp(prefix="mp-log-", dir="/tmp"))
    config = _agent_config(root, f"log_file = {root}/from-config.log\n")
    agent = _twistd_metaproxy(
        root, "--config-file", str(config), f"--log-file={root}/neutron-metadata-agent.log"
    )
    try:
        log = root / "neutron-metadata-agent.log"
        _wait(lambda: log.exists() and "metaproxy serving" in log.read_text(), what="start")
        assert not (root / "from-config.log").exists()
    finally:
        _stop(agent)
        shutil.rmtree(root, ignore_errors=True)


def test_an_unsupported_logging_option_stops_the_start_with_one_line():
    root = Path(tempfile.mkdtemp(prefix="mp-log-", dir="/tmp"))
    config = _agent_config(root, "log_config_append = /etc/neutron/logging.conf\n")
    try:
        agent = _twistd_metaproxy(root, "--config-file", str(config))
        assert agent.wait(30) == 1
        out = (root / "stdout").read_text()
        lines = [line for line in out.splitlines() if "log_config_append" in line]
        assert len(lines) == 1
        assert f"{config}: [DEFAULT] log_config_append = '/etc/neutron/logging.conf'" in lines[0]
        assert "not supported" in lines[0] and "contrib/metaproxy.logrotate" in lines[0]
        assert not (root / "s" / "metadata_proxy").exists()
    finally:
        shutil.rmtree(root, ignore_errors=True)
