"""Router namespaces served by metaproxy itself, with no haproxy: a listener in every
C{qrouter-<router id>} namespace on the node (C{[metaproxy] router_namespaces = serve}).

The node's named network namespaces are the files of C{/run/netns}. The directory is
watched with inotify and rescanned every C{namespace_rescan_interval} seconds in any case
(as L{metaproxy.agent.registry} watches its own directory). A new C{qrouter-} namespace
gets, on the opener's thread inside it, C{169.254.169.254/32} on its loopback
(L{metaproxy.agent.router_address}) and a listening socket on C{169.254.169.254:80}
(L{metaproxy.http.listeners.Listeners.add_tcp}); the callers are the connections' peers,
the router the namespace's. When the namespace goes, its listener is closed, so nothing
of metaproxy's keeps it alive.

C{ip netns add} (and pyroute2's C{netns.create}, which the L3 agent uses) creates the
file first and binds the namespace onto it a moment later: a namespace seen before that
cannot be entered yet ("not a network namespace"). Such a router is tried again after
0.1, 0.2, 0.4 s..., at most every rescan interval, and its failure is logged only once
the quick tries are spent (a router served within a second logs nothing but its
success), then again only when the reason changes.

A name can come back bound to another namespace (the router deleted and scheduled here
again between two looks): each served router's file is compared, at every scan, with the
namespace its socket lives in (their inodes), and a replaced one is listened in anew.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from metaproxy.agent.router_address import METADATA_V4, ensure_metadata_address
from metaproxy.http.listeners import ListenAddress, Listeners
from metaproxy.http.netns import NETNS_DIR
from metaproxy.namespace import InvalidNamespace, Namespace, NamespaceKind

__all__ = ["ROUTER_LISTEN", "RouterWatch"]

log = Logger("metaproxy.routers")

#: Where metaproxy listens in a router namespace.
ROUTER_LISTEN = ListenAddress(METADATA_V4, 80)
_PREFIX = NamespaceKind.ROUTER.prefix
#: The first retry of a router that could not be listened in, doubled at each failure
#: up to the rescan interval.
FIRST_RETRY = 0.1
#: Failures in a row before one is logged: 0.1 + 0.2 + 0.4 s of quick tries first.
QUIET_FAILURES = 3
#: A burst of directory events makes one scan, this long after the first.
SETTLE = 0.05


@attrs.define(eq=False)
class _Router:
    """One router namespace being listened in, listened in, or waiting for a retry."""

    namespace: Namespace
    state: str = "opening"  # opening, serving, waiting
    inode: int | None = None  # of the namespace its socket lives in
    failures: int = 0
    logged: str | None = None  # the failure last logged
    retry: Any = None  # IDelayedCall


class _Prepare:
    """The C{prepare} of one opening: adds the address inside the namespace and keeps
    the namespace's inode. Runs on the opener's thread; read on the reactor's once the
    opening has fired."""

    def __init__(self, name: str, ensure: Callable[[str], int]) -> None:
        self.name = name
        self.ensure = ensure
        self.inode: int | None = None

    def __call__(self) -> None:
        self.inode = self.ensure(self.name)


class RouterWatch(Service):
    """Keeps a listener in every C{qrouter-} namespace of C{netns_dir}.

    @param id_prefix: serve only the routers whose id starts with it (C{""}: all);
        C{[metaproxy] router_id_prefix}, for hosts shared with other runs' routers.
    @param inotify: makes the directory watcher, given the reactor (Twisted's
        C{INotify} by default); C{None}: rescans only.
    @param ensure: adds the metadata address inside a namespace and returns its inode
        (L{ensure_metadata_address}); replaced in tests.
    """

    def __init__(
        self,
        reactor: Any,
        listeners: Listeners,
        *,
        netns_dir: str = NETNS_DIR,
        id_prefix: str = "",
        rescan_interval: float = 10.0,
        inotify: Callable[[Any], Any] | None = None,
        ensure: Callable[[str], int] = ensure_metadata_address,
        address: ListenAddress = ROUTER_LISTEN,
    ) -> None:
        self._reactor = reactor
        self._listeners = listeners
        self._dir = netns_dir
        self._id_prefix = id_prefix
        self._interval = rescan_interval
        self._inotify = inotify
        self._ensure = ensure
        self._address = address
        self._routers: dict[Namespace, _Router] = {}
        self._bad_names: set[str] = set()
        self._loop: LoopingCall | None = None
        self._notifier: Any = None
        self._pending_scan: Any = None
        self._missing_logged = False
        self._first: list[Deferred[None]] | None = None

    # -- what is there --------------------------------------------------------------

    def _scan(self) -> set[Namespace] | None:
        """The router namespaces in the directory now; None when it does not exist."""
        try:
            names = os.listdir(self._dir)
        except FileNotFoundError:
            return None
        found = set()
        for name in names:
            if not name.startswith(_PREFIX) or name in self._bad_names:
                continue
            try:
                namespace = Namespace.parse(name)
            except InvalidNamespace as e:
                self._bad_names.add(name)
                log.warn("Not serving {name}: {error}", name=name, error=str(e))
                continue
            if namespace.id.startswith(self._id_prefix):
                found.add(namespace)
        return found

    def _inode(self, namespace: Namespace) -> int | None:
        try:
            return os.stat(os.path.join(self._dir, namespace.name)).st_ino
        except OSError:
            return None

    @property
    def serving(self) -> frozenset[Namespace]:
        """The router namespaces listened in now."""
        return frozenset(ns for ns, r in self._routers.items() if r.state == "serving")

    @property
    def known(self) -> frozenset[Namespace]:
        """Every router namespace found: listened in, being opened, or waiting."""
        return frozenset(self._routers)

    def failure(self, namespace: Namespace) -> str | None:
        """Why a router namespace found is not listened in, once that has been logged."""
        router = self._routers.get(namespace)
        return router.logged if router is not None and router.state != "serving" else None

    # -- bringing the listeners in line ---------------------------------------------

    def sync(self) -> None:
        """Listen in the router namespaces that appeared, close the listeners of those
        that went (or were replaced under the same name)."""
        self._pending_scan = None
        found = self._scan()
        if found is None:
            if not self._missing_logged:
                self._missing_logged = True
                log.info(
                    "{directory} does not exist yet: no router namespace to serve "
                    "(looked for again every {interval} s)",
                    directory=self._dir,
                    interval=self._interval,
                )
            found = set()
        else:
            self._missing_logged = False
            if self._inotify is not None and self._notifier is None:
                self._watch()
        for namespace, router in list(self._routers.items()):
            if namespace not in found:
                self._drop(router, "its namespace is gone")
            elif router.state == "serving" and self._inode(namespace) != router.inode:
                self._drop(router, "a new namespace has its name")
        for namespace in sorted(found - set(self._routers), key=str):
            self._start(_Router(namespace))

    def _start(self, router: _Router) -> Deferred[None]:
        self._routers[router.namespace] = router
        router.state, router.retry = "opening", None
        prepare = _Prepare(router.namespace.name, self._ensure)
        d = self._listeners.add_tcp(router.namespace, [self._address], prepare=prepare)
        d.addCallbacks(
            self._opened, self._failed, callbackArgs=(router, prepare), errbackArgs=(router,)
        )
        if self._first is not None:
            self._first.append(d)
        return d

    def _current(self, router: _Router) -> bool:
        return self._routers.get(router.namespace) is router

    def _opened(self, _: object, router: _Router, prepare: _Prepare) -> None:
        if not self._current(router):
            return  # dropped while being opened: remove_tcp closes it
        router.state, router.inode = "serving", prepare.inode
        if router.logged is not None:
            log.info("Serving router namespace {namespace} now", namespace=router.namespace.name)
        elif self._first is None:  # found after start-up: say so (once per router)
            log.info(
                "Serving router namespace {namespace} on {address}",
                namespace=router.namespace.name,
                address=str(self._address),
            )
        router.failures, router.logged = 0, None

    def _failed(self, failure: Failure, router: _Router) -> None:
        if not self._current(router) or not self.running:
            return
        message = str(failure.value)
        router.failures += 1
        delay = min(FIRST_RETRY * 2 ** (router.failures - 1), self._interval)
        if router.failures > QUIET_FAILURES and message != router.logged:
            log.error(
                "Cannot serve router namespace {namespace}: {error} (tried again every "
                "{interval:g} s at most)",
                namespace=router.namespace.name,
                error=message,
                interval=self._interval,
            )
            router.logged = message
        router.state = "waiting"
        router.retry = self._reactor.callLater(delay, self._retry, router)

    def _retry(self, router: _Router) -> None:
        router.retry = None
        if not self._current(router):
            return
        if not os.path.lexists(os.path.join(self._dir, router.namespace.name)):
            self._drop(router, "its namespace is gone")
            return
        self._start(router)

    def _drop(self, router: _Router, why: str) -> None:
        del self._routers[router.namespace]
        if router.retry is not None and router.retry.active():
            router.retry.cancel()
        router.retry = None
        if router.state == "serving":
            log.info(
                "Stopped serving router namespace {namespace}: {why}",
                namespace=router.namespace.name,
                why=why,
            )
        if router.state in ("serving", "opening"):
            self._listeners.remove_tcp(router.namespace).addErrback(
                lambda f: log.failure(
                    "Closing the listener of {namespace}", f, namespace=router.namespace.name
                )
            )
        router.state = "dropped"

    # -- service ----------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._first = []
        self.sync()
        first, self._first = self._first, None
        DeferredList(first, consumeErrors=True).addCallback(self._started, len(first))
        self._loop = LoopingCall(self.sync)
        self._loop.clock = self._reactor
        self._loop.start(self._interval, now=False).addErrback(
            lambda f: log.failure("Router namespace rescans stopped", f)
        )

    def _started(self, _: object, found: int) -> None:
        log.info(
            "Serving {serving} of {found} router namespace(s) found in {directory} on "
            "{address}; watching for more",
            serving=len(self.serving),
            found=found,
            directory=self._dir,
            address=str(self._address),
        )

    def _watch(self) -> None:
        assert self._inotify is not None
        try:
            self._notifier = self._inotify(self._reactor)
            self._notifier.startReading()
            from twisted.internet import inotify
            from twisted.python.filepath import FilePath

            self._notifier.watch(
                FilePath(self._dir),
                mask=inotify.IN_CREATE
                | inotify.IN_DELETE
                | inotify.IN_MOVED_TO
                | inotify.IN_MOVED_FROM,
                callbacks=[self._changed],
            )
        except Exception as e:  # no inotify here: the rescans still work
            log.info(
                "Watching {directory} by rescanning every {interval} s only ({error})",
                directory=self._dir,
                interval=self._interval,
                error=str(e),
            )
            if self._notifier is not None:
                self._notifier.loseConnection()
            self._inotify = None
            self._notifier = None

    def _changed(self, _watch: object, path: Any, _mask: int) -> None:
        # other kinds of namespace come and go too: only a router's makes a scan, and a
        # burst of them one scan
        name = path.basename()
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        if name.startswith(_PREFIX) and self._pending_scan is None:
            self._pending_scan = self._reactor.callLater(SETTLE, self.sync)

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        if self._pending_scan is not None and self._pending_scan.active():
            self._pending_scan.cancel()
        self._pending_scan = None
        for router in self._routers.values():
            if router.retry is not None and router.retry.active():
                router.retry.cancel()
            router.retry = None
        if self._notifier is not None:
            self._notifier.loseConnection()
            self._notifier = None


def twisted_inotify(reactor: Any) -> Any:
    """Twisted's inotify watcher on C{reactor} (Linux)."""
    from twisted.internet import inotify

    return inotify.INotify(reactor)
