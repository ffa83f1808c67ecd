"""A private RabbitMQ broker for the RPC tests and the bench: a plain process, never a
system service.

    broker = RabbitMQ.start(Path("/tmp/mpr-x"))    # seconds: Erlang boots the node
    broker.transport_url                            # rabbit://guest:guest@127.0.0.1:<port>/
    broker.stop(); broker.restart()                 # same node, port and data again
    broker.close()                                  # stop, and its own epmd too

Everything is its own: the AMQP port, the Erlang distribution port and an epmd on a
private port (so it meets no other broker or developer on this machine), node name
C{mp<hex>@localhost}, data (C{RABBITMQ_MNESIA_BASE}), logs (C{RABBITMQ_LOG_BASE}),
configuration file, plugin list (none) and Erlang cookie (C{HOME}) under the run
directory. Debian's C{/usr/sbin/rabbitmq-server} wrapper switches to the C{rabbitmq}
user and writes to C{/var/log/rabbitmq}; the script it wraps,
C{/usr/lib/rabbitmq/bin/rabbitmq-server}, is run instead.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

__all__ = ["RABBITMQ_SERVER", "rabbitmq_missing", "free_port", "RabbitMQ"]

#: The server script (Debian's package), without the wrapper that changes user.
RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"


def rabbitmq_missing() -> str | None:
    """Why a broker cannot be started here (one line), or None when it can."""
    if not os.access(RABBITMQ_SERVER, os.X_OK):
        return (
            f"rabbitmq-server is not installed ({RABBITMQ_SERVER}; apt-get install rabbitmq-server)"
        )
    if shutil.which("epmd") is None:
        return "epmd (Erlang) is not installed (apt-get install rabbitmq-server)"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _amqp_ready(port: int) -> bool:
    """Whether the broker accepts an AMQP login (the port alone opens before it does)."""
    import amqp

    try:
        connection = amqp.Connection(
            f"127.0.0.1:{port}", userid="guest", password="guest", connect_timeout=2
        )
        connection.connect()
        connection.close()
        return True
    except Exception:
        return False


class RabbitMQ:
    """One private broker (see the module docstring). Build it with L{start}."""

    def __init__(self, run_dir: Path, port: int, dist_port: int, epmd_port: int, node: str) -> None:
        self.run_dir = run_dir
        self.port = port
        self.dist_port = dist_port
        self.epmd_port = epmd_port
        self.node = node
        self.popen: subprocess.Popen | None = None

    @classmethod
    def start(cls, run_dir: Path, timeout: float = 60.0) -> RabbitMQ:
        """Start a new broker under C{run_dir}; returns once it accepts AMQP logins.

        @raise RuntimeError: it did not start (the message has its log's tail).
        """
        missing = rabbitmq_missing()
        if missing:
            raise RuntimeError(missing)
        run_dir = Path(run_dir).resolve()
        run_dir.mkdir(parents=True, exist_ok=True)
        broker = cls(
            run_dir, free_port(), free_port(), free_port(), f"mp{uuid.uuid4().hex[:10]}@localhost"
        )
        (run_dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{broker.port}\n"
            "loopback_users.guest = true\n"
            "log.console = false\n"
            "log.file.level = info\n"
        )
        (run_dir / "enabled_plugins").write_text("[].\n")
        broker._launch(timeout)
        return broker

    @property
    def transport_url(self) -> str:
        """The C{transport_url} of this broker (guest is allowed from loopback only)."""
        return f"rabbit://guest:guest@127.0.0.1:{self.port}/"

    def _env(self) -> dict[str, str]:
        d = self.run_dir
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            HOME=str(d),  # the Erlang cookie
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            ERL_EPMD_PORT=str(self.epmd_port),
            RABBITMQ_CONFIG_FILE=str(d / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(d / "advanced.config"),
            RABBITMQ_CONF_ENV_FILE=str(d / "rabbitmq-env.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(d / "enabled_plugins"),
            RABBITMQ_MNESIA_BASE=str(d / "mnesia"),
            RABBITMQ_LOG_BASE=str(d / "log"),
            RABBITMQ_PID_FILE=str(d / "rabbitmq.pid"),
        )
        return env

    def log(self) -> str:
        parts = []
        for path in [self.run_dir / "stdout.log", *sorted((self.run_dir / "log").glob("*.log"))]:
            try:
                parts.append(path.read_text(errors="replace"))
            except OSError:
                pass
        return "\n".join(parts)

    def _launch(self, timeout: float) -> None:
        with open(self.run_dir / "stdout.log", "ab") as out:
            self.popen = subprocess.Popen(
                [RABBITMQ_SERVER],
                env=self._env(),
                cwd=str(self.run_dir),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(
                    f"rabbitmq-server exited with {self.popen.returncode}:\n{self.log()[-3000:]}"
                )
            if _amqp_ready(self.port):
                return
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(
            f"rabbitmq-server did not accept AMQP logins on port {self.port} "
            f"within {timeout:g} s:\n{self.log()[-3000:]}"
        )

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the broker (SIGTERM to its process group, then SIGKILL); data is kept."""
        popen, self.popen = self.popen, None
        if popen is None or popen.poll() is not None:
            return
        try:
            os.killpg(popen.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            popen.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            popen.wait()

    def restart(self, timeout: float = 60.0) -> None:
        """Start the same node again (same ports and data) after L{stop}."""
        self.stop()
        self._launch(timeout)

    def close(self) -> None:
        """Stop the broker and the epmd its Erlang started on the private port."""
        self.stop()
        env = self._env()
        subprocess.run(
            ["epmd", "-port", str(self.epmd_port), "-kill"],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=10,
        )
