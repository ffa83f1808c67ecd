"""The haproxy the replaced agent left in a metadata namespace, stopped before
metaproxy serves it.

Upstream's agent (neutron-ovn-metadata-agent, or neutron-ovn-agent's metadata
extension) runs one haproxy per C{ovnmeta-<network id>} namespace, listening on
169.254.169.254:80. Stopping the agent leaves them running: they still hold the address
metaproxy must listen on. Each one's pid is in C{<external_pids>/<network id>.pid.haproxy}
(C{[DEFAULT] external_pids}, default C{$state_path/external/pids}; its command line is
C{haproxy -f <state_path>/ovn-metadata-proxy/<network id>.conf}). So, before a
namespace is served (L{HaproxyLeftovers.clear}):

  1. no pid file: nothing to do;
  2. the pid's C{/proc/<pid>/cmdline} is not a haproxy naming the network (no such
     process, or another one that has the pid now): the file is stale; it is removed and
     no process is signalled;
  3. otherwise: one line for the operator, C{SIGTERM}, and a wait (on the clock, polling
     C{/proc}) of at most C{term_wait} seconds for it to go, then C{SIGKILL} and at most
     C{kill_wait} seconds more; the pid file is removed and the stop counted.

A process is gone when its cmdline no longer shows that haproxy (a zombie's is empty).
The listening that follows may still find the address taken (a haproxy with no pid file,
or one that did not die): the serving says so and the provisioning retries.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.task import deferLater
from twisted.logger import Logger

__all__ = [
    "HAPROXY_PID_SUFFIX",
    "haproxy_pid_file",
    "read_pid",
    "process_cmdline",
    "is_network_haproxy",
    "HaproxyLeftovers",
]

log = Logger("metaproxy.chassis")

#: Upstream's pid file of a network's haproxy: C{<network id>.pid.haproxy}.
HAPROXY_PID_SUFFIX = ".pid.haproxy"


def haproxy_pid_file(external_pids: str, network_id: str) -> str:
    """Where upstream's agent keeps the pid of network C{network_id}'s haproxy."""
    return os.path.join(os.path.abspath(external_pids), network_id + HAPROXY_PID_SUFFIX)


def read_pid(path: str) -> int | None:
    """The pid in C{path}; None when there is no such file or it holds no pid."""
    try:
        with open(path) as f:
            text = f.read(64)
    except OSError:
        return None
    try:
        pid = int(text.strip())
    except ValueError:
        return None
    return pid if pid > 0 else None


def process_cmdline(pid: int, proc_root: str = "/proc") -> list[str]:
    """Process C{pid}'s command line; empty when there is no such process (or it is a
    zombie)."""
    try:
        with open(os.path.join(proc_root, str(pid), "cmdline"), "rb") as f:
            raw = f.read()
    except OSError:
        return []
    return [os.fsdecode(arg) for arg in raw.split(b"\0") if arg]


def is_network_haproxy(cmdline: Sequence[str], network_id: str) -> bool:
    """C{cmdline} is a haproxy's (its program is C{haproxy}) naming C{network_id} in an
    argument (upstream's C{-f .../<network id>.conf}), as upstream tells its own."""
    if not cmdline or not network_id:
        return False
    program = os.path.basename(cmdline[0])
    return program.startswith("haproxy") and any(network_id in arg for arg in cmdline[1:])


class HaproxyLeftovers:
    """Stops the haproxy upstream's agent left in a network's namespace (see the module
    docstring).

    @param kill: C{os.kill} (tests pass their own).
    @param proc_root: where processes are read (C{/proc}).
    """

    def __init__(
        self,
        clock: Any,
        external_pids: str,
        *,
        term_wait: float = 5.0,
        kill_wait: float = 2.0,
        poll_interval: float = 0.1,
        kill: Callable[[int, int], None] = os.kill,
        proc_root: str = "/proc",
    ) -> None:
        self._clock = clock
        self.external_pids = external_pids
        self._term_wait = term_wait
        self._kill_wait = kill_wait
        self._poll = poll_interval
        self._kill = kill
        self._proc_root = proc_root
        #: haproxies stopped, and of them those that needed SIGKILL
        self.stopped = 0
        self.killed = 0

    def _is_ours(self, pid: int, network_id: str) -> bool:
        return is_network_haproxy(process_cmdline(pid, self._proc_root), network_id)

    async def clear(self, network_id: str) -> bool:
        """Stop network C{network_id}'s leftover haproxy, if upstream's pid file names
        one; True when one was stopped."""
        path = haproxy_pid_file(self.external_pids, network_id)
        if not os.path.lexists(path):
            return False
        pid = read_pid(path)
        if pid is None or not self._is_ours(pid, network_id):
            log.info(
                "Removing {path}, a stale haproxy pid file of network {network}: "
                "{what}; no process is signalled",
                path=path,
                network=network_id,
                what="it holds no pid"
                if pid is None
                else f"process {pid} is not that network's haproxy",
            )
            _remove(path)
            return False
        log.warn(
            "Stopping haproxy {pid}, left by the previous metadata agent in the namespace "
            "of network {network} (pid file {path}): it holds the metadata address "
            "metaproxy serves now",
            pid=pid,
            network=network_id,
            path=path,
        )
        try:
            stopped = await self._signal_and_wait(pid, network_id, signal.SIGTERM, self._term_wait)
        except PermissionError:
            log.error(
                "Cannot signal haproxy {pid} (network {network}): permission denied "
                "(metaproxy needs CAP_KILL, or to run as root as the agent it replaces)",
                pid=pid,
                network=network_id,
            )
            return False
        if not stopped:
            log.warn(
                "haproxy {pid} (network {network}) did not stop within {seconds} s of "
                "SIGTERM: sending SIGKILL",
                pid=pid,
                network=network_id,
                seconds=self._term_wait,
            )
            stopped = await self._signal_and_wait(pid, network_id, signal.SIGKILL, self._kill_wait)
            if stopped:
                self.killed += 1
        if not stopped:
            log.error(
                "haproxy {pid} (network {network}) is still running after SIGKILL; "
                "metaproxy cannot listen in its namespace while it does",
                pid=pid,
                network=network_id,
            )
            return False
        _remove(path)
        self.stopped += 1
        return True

    async def _signal_and_wait(self, pid: int, network_id: str, sig: int, wait: float) -> bool:
        """Send C{sig}; True once the process is gone, False if still there after
        C{wait} seconds.

        @raise PermissionError: it may not be signalled."""
        try:
            self._kill(pid, sig)
        except ProcessLookupError:
            return True
        waited = 0.0
        while self._is_ours(pid, network_id):
            if waited >= wait:
                return False
            await deferLater(self._clock, self._poll, lambda: None)
            waited += self._poll
        return True


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        log.warn("Cannot remove {path}: {why}", path=path, why=e.strerror)
