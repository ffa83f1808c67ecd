"""The host edge of provisioning: network namespaces, veths, addresses and MTUs through
netlink (pyroute2), and the checksum-fill rule through iptables.

Everything here blocks (netlink round trips, a namespace switch, an C{iptables}
process) and runs on one dedicated thread (L{NetlinkHost}'s pool of one), so the reactor
never waits on the kernel and steps never interleave.

Work inside a namespace (its links, addresses, its checksum rule; making it) is done by
a short-lived thread that enters the namespace (C{setns}, or C{unshare} to make one) and
ends there, never going back: no process is forked for it (pyroute2's own
C{IPRoute(netns=...)} and C{netns.create} fork one per call, some 15 ms each, which made
a thousand namespaces take minutes), and the pool's thread never changes namespace.

Observing reads the links on a plain rtnetlink socket (L{metaproxy.chassis.linkdump}):
pyroute2 decodes every link of a dump into objects, which with 1,000 networks (3,000
links in the root namespace) took seconds and tens of MiB per pass.

Memory: pyroute2 (0.9) leaves each C{IPRoute} it closes as cyclic garbage, about 170
objects (its asyncio event loop among them) that only the cycle collector frees, and
by then they have spread over CPython's object arenas, which go back to the system only
when wholly empty. Provisioning a network opens a few: every L{_GC_EVERY}th C{IPRoute}
closed is followed by a collection of the young generations (about 1 ms; over 1,000 of
them that left 2.8 MiB instead of 10.9 MiB), and after each observation
C{malloc_trim(0)} gives the C library's free pages back (the short-lived threads'
malloc arenas among them). Measured at 1,000 networks: BENCHMARKS.md.

Needs C{CAP_NET_ADMIN} (links, addresses, iptables) and C{CAP_SYS_ADMIN} (creating,
entering and removing named namespaces).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import gc
import ipaddress
import itertools
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from metaproxy.chassis.linkdump import link_states
from metaproxy.chassis.plan import NS_PREFIX, veth_names
from metaproxy.chassis.steps import (
    AddAddress,
    ChecksumFill,
    CreateNamespace,
    CreateVeth,
    DeleteAddress,
    DeleteLink,
    DeleteNamespace,
    HostState,
    LinkState,
    SetLink,
)
from metaproxy.http.netns import NETNS_DIR, set_network_namespace

__all__ = ["NetlinkError", "NetlinkHost", "observe", "apply_step"]

_CLONE_NEWNET = 0x40000000
#: a collection of the young generations after this many IPRoutes closed (module docstring)
_GC_EVERY = 10
_routes_closed = itertools.count(1)
_CHECKSUM_RULE = ["POSTROUTING", "-p", "tcp", "-m", "tcp", "-j", "CHECKSUM", "--checksum-fill"]


class NetlinkError(RuntimeError):
    """A step failed; str() names the step and the kernel's (or iptables') reason."""


def _pyroute2() -> Any:
    import pyroute2  # imported here: only the chassis mode needs it

    return pyroute2


@contextlib.contextmanager
def _route(pyroute2: Any) -> Iterator[Any]:
    """An C{IPRoute} in the calling thread's namespace, closed after use; its garbage
    collected with every L{_GC_EVERY}th (module docstring)."""
    try:
        with pyroute2.IPRoute() as ipr:
            yield ipr
    finally:
        if next(_routes_closed) % _GC_EVERY == 0:
            gc.collect(1)


def _trim_malloc() -> None:
    """Give the C library's free memory back to the system (glibc's C{malloc_trim}; a
    no-op where there is none)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return
    trim(0)


def _in_thread(action: Callable[[], Any]) -> Any:
    """C{action()}'s value, run on a thread of its own that ends when it returns (it
    may leave that thread in another network namespace); its exception re-raised."""
    outcome: list[Any] = []

    def body() -> None:
        try:
            outcome.append((True, action()))
        except BaseException as e:
            outcome.append((False, e))

    thread = threading.Thread(target=body, name="metaproxy-netlink-ns", daemon=True)
    thread.start()
    thread.join()
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


def _enter(namespace: str) -> None:
    """Move the calling thread into C{namespace} (a thread of L{_in_thread} only)."""
    fd = os.open(os.path.join(NETNS_DIR, namespace), os.O_RDONLY | os.O_CLOEXEC)
    try:
        set_network_namespace(fd)
    finally:
        os.close(fd)


def _in_namespace(namespace: str, action: Callable[[], Any]) -> Any:
    """C{action()} run inside C{namespace}, on a thread of its own."""

    def inside() -> Any:
        _enter(namespace)
        return action()

    return _in_thread(inside)


def _create_namespace(pyroute2: Any, namespace: str) -> None:
    """Make the named namespace C{namespace} with its loopback up (as upstream's agent
    makes it: a process in it, an operator's curl say, reaches 169.254.169.254 there
    too): a new thread C{unshare}s a new network namespace, which is bind-mounted on
    C{/run/netns/<namespace>} as C{ip netns add} does."""

    def make() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(_CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        pyroute2.netns.attach(namespace, "thread-self")
        with _route(pyroute2) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")

    _in_thread(make)


def observe(network_ids: Iterable[str], prefix: str = NS_PREFIX) -> HostState:
    """The host's state for the namespaces named C{prefix...} and the networks given
    (blocking)."""
    pyroute2 = _pyroute2()
    namespaces = frozenset(ns for ns in pyroute2.netns.listnetns() if ns.startswith(prefix))
    wanted = set(network_ids) | {ns[len(NS_PREFIX) :] for ns in namespaces}

    def visit_all() -> dict[str, LinkState]:
        # one thread goes from namespace to namespace, and ends in the last
        found = {}
        for ns in sorted(namespaces):
            _outside, inside_name = veth_names(ns[len(NS_PREFIX) :])
            try:
                _enter(ns)
                state = link_states((inside_name,)).get(inside_name)
            except OSError:
                continue  # removed meanwhile
            if state is not None:
                found[ns] = state
        return found

    inside = _in_thread(visit_all) if namespaces else {}
    outside = link_states(veth_names(network)[0] for network in wanted)
    _trim_malloc()
    return HostState(namespaces, inside, outside)


def _family(cidr: str) -> tuple[str, int, int]:
    interface = ipaddress.ip_interface(cidr)
    return str(interface.ip), interface.network.prefixlen, 4 if interface.version == 4 else 6


def _with_link(pyroute2: Any, namespace: str | None, name: str, action: Any) -> None:
    def on_link() -> None:
        with _route(pyroute2) as ipr:
            indexes = ipr.link_lookup(ifname=name)
            if not indexes:
                raise NetlinkError(f"no link {name} in {namespace or 'the root namespace'}")
            action(ipr, indexes[0])

    if namespace:
        _in_namespace(namespace, on_link)
    else:
        on_link()


def _iptables(
    namespace: str, args: Sequence[str], program: str = "iptables"
) -> subprocess.CompletedProcess[bytes]:
    """C{program -w -t mangle args} run inside C{namespace} (forked by a thread inside
    it, so the process starts there)."""
    command = shutil.which(program) or program
    return _in_namespace(
        namespace,
        lambda: subprocess.run(
            [command, "-w", "-t", "mangle", *args],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=30,
        ),
    )


def apply_step(step: object) -> None:
    """Do one netlink step (blocking). @raise NetlinkError: it failed."""
    pyroute2 = _pyroute2()
    try:
        if isinstance(step, CreateNamespace):
            _create_namespace(pyroute2, step.namespace)
        elif isinstance(step, DeleteNamespace):
            pyroute2.netns.remove(step.namespace)
        elif isinstance(step, CreateVeth):
            with _route(pyroute2) as ipr:
                ipr.link(
                    "add",
                    ifname=step.outside,
                    kind="veth",
                    peer={"ifname": step.inside, "net_ns_fd": step.namespace},
                )
        elif isinstance(step, DeleteLink):
            _with_link(pyroute2, step.namespace, step.name, lambda ipr, i: ipr.link("del", index=i))
        elif isinstance(step, SetLink):
            changes: dict[str, Any] = {"state": "up"}
            if step.mac:
                changes["address"] = step.mac
            if step.mtu:
                changes["mtu"] = step.mtu
            _with_link(
                pyroute2,
                step.namespace,
                step.name,
                lambda ipr, i: ipr.link("set", index=i, **changes),
            )
        elif isinstance(step, (AddAddress, DeleteAddress)):
            address, prefixlen, _version = _family(step.cidr)
            command = "add" if isinstance(step, AddAddress) else "del"

            def change(ipr: Any, index: int) -> None:
                try:
                    ipr.addr(command, index=index, address=address, prefixlen=prefixlen)
                except pyroute2.NetlinkError as e:
                    # already there (add) or already gone (del): the state is as wanted
                    if e.code not in (errno.EEXIST, errno.EADDRNOTAVAIL):
                        raise

            _with_link(pyroute2, step.namespace, step.link, change)
        elif isinstance(step, ChecksumFill):
            programs = ("iptables", "ip6tables") if step.ipv6 else ("iptables",)
            for program in programs:
                if _iptables(step.namespace, ["-C", *_CHECKSUM_RULE], program).returncode:
                    done = _iptables(step.namespace, ["-A", *_CHECKSUM_RULE], program)
                    if done.returncode != 0:
                        raise NetlinkError(
                            f"{program} in {step.namespace} cannot add the checksum-fill "
                            f"rule: {done.stderr.decode(errors='replace').strip()}"
                        )
        else:
            raise NetlinkError(f"not a netlink step: {step!r}")
    except NetlinkError:
        raise
    except Exception as e:  # pyroute2's NetlinkError, OSError, FileExistsError ...
        raise NetlinkError(f"{step}: {type(e).__name__}: {e}") from None


class NetlinkHost:
    """L{observe} and L{apply_step} on a dedicated thread.

    @param reactor: the pool's thread is started at the first use (not when built: twistd
        forks to daemonise after building the service, and a thread does not survive
        the fork) and stopped with the reactor.
    """

    def __init__(self, reactor: Any, prefix: str = NS_PREFIX) -> None:
        self._reactor = reactor
        self.prefix = prefix
        self._pool = ThreadPool(1, 1, name="metaproxy-netlink")
        self._trigger: Any = None
        self._stopped = False

    def _started(self) -> ThreadPool:
        if not self._pool.started and not self._stopped:
            self._pool.start()
            self._trigger = self._reactor.addSystemEventTrigger("during", "shutdown", self.stop)
        return self._pool

    def stop(self) -> None:
        self._stopped = True
        if self._trigger is not None:
            trigger, self._trigger = self._trigger, None
            try:
                self._reactor.removeSystemEventTrigger(trigger)
            except (ValueError, KeyError):
                pass  # already fired: the reactor is shutting down
        if self._pool.started:
            self._pool.stop()

    def observe(self, network_ids: Iterable[str]) -> Deferred[HostState]:
        return deferToThreadPool(
            self._reactor, self._started(), observe, tuple(network_ids), self.prefix
        )

    def apply(self, steps: Sequence[object]) -> Deferred[None]:
        """Do C{steps} in order, stopping at the first that fails."""

        def run_all() -> None:
            for step in steps:
                apply_step(step)

        return deferToThreadPool(self._reactor, self._started(), run_all)
