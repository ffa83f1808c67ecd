"""An agent started in a session of its own, and every process it leaves in it.

An agent's helpers may outlive their parent and be re-parented (oslo.privsep's daemons
fork and their parent exits), so a process tree misses them; they keep the session,
though. The agents the OVN comparison runs are started with C{start_new_session}, so
the session id is the agent's pid.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

__all__ = ["SessionAgent", "session_of", "session_pids", "stop_session"]


def session_of(pid: int, proc: str = "/proc") -> int | None:
    """The session id of C{pid} (field 6 of C{/proc/<pid>/stat}); None if it is gone."""
    try:
        with open(f"{proc}/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2 :].split()
    if len(fields) < 4 or fields[0] == b"Z":
        return None
    return int(fields[3])


def session_pids(sid: int, proc: str = "/proc") -> set[int]:
    """Every live (not zombie) process of session C{sid}."""
    return {
        int(name)
        for name in os.listdir(proc)
        if name.isdigit() and session_of(int(name), proc) == sid
    }


def stop_session(popen: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM the leader C{popen} and every process of its session; SIGKILL what is
    left after C{timeout}; reap the leader."""
    sid = popen.pid
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in session_pids(sid) | ({sid} if popen.poll() is None else set()):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            popen.poll()
            if popen.returncode is not None and not session_pids(sid):
                return
            time.sleep(0.05)
    try:
        popen.wait(5)
    except subprocess.TimeoutExpired:
        pass


class SessionAgent:
    """An agent started in a session of its own (C{start_new_session}): its pid, every
    process of its session, its log files in C{run_dir}, and stopping the session."""

    #: what the comparison calls it
    name = ""
    #: its log files in C{run_dir}, read in this order
    log_names: tuple[str, ...] = ()

    def __init__(self, popen: subprocess.Popen[bytes], run_dir: Path) -> None:
        self.popen = popen
        self.run_dir = run_dir
        self.started_at = time.monotonic()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def pids(self) -> set[int]:
        """The agent and every process of its session (helpers it forked included)."""
        return session_pids(self.popen.pid) | ({self.popen.pid} if self.alive() else set())

    def log(self) -> str:
        text = ""
        for name in self.log_names:
            try:
                text += (self.run_dir / name).read_text(errors="replace")
            except OSError:
                pass
        return text

    def stop(self) -> None:
        stop_session(self.popen)
