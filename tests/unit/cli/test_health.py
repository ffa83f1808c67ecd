"""``metaproxy health``: the exit status follows the agent's /healthz answer."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from metaproxy.cli import main


def test_health_without_metrics_listen_says_so(capsys):
    assert main(["health"]) == 2
    err = capsys.readouterr().err
    assert "sets no [metaproxy] metrics_listen" in err and "--listen" in err


def test_health_refuses_a_bad_listen_entry(capsys):
    assert main(["health", "--listen", "localhost:1"]) == 2
    assert "not an IP address" in capsys.readouterr().err


def _serve_once(path: str, answer: bytes) -> threading.Thread:
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)

    def run():
        conn, _ = server.accept()
        conn.recv(65536)
        conn.sendall(answer)
        conn.close()
        server.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.parametrize("status, code", [(200, 0), (503, 1)])
def test_health_exit_status_follows_the_answer(capsys, short_dir, status, code):
    path = os.path.join(short_dir, "m.sock")
    body = b'{"status": "x"}'
    thread = _serve_once(
        path,
        b"HTTP/1.1 %d X\r\nContent-Length: %d\r\nConnection: close"
        b"\r\n\r\n%s" % (status, len(body), body),
    )
    assert main(["health", "--listen", f"unix:{path}"]) == code
    thread.join(5)
    assert capsys.readouterr().out.strip() == '{"status": "x"}'
