"""The local control socket: add, remove and list namespaces on a running agent.

One line in (C{add <namespace>}, C{remove <namespace>}, C{list}), the answer out, then the
connection closes. The answer's first line is C{ok} or C{error: <message>}; C{list}
follows C{ok} with one namespace name per line. The socket is mode 0600: only the agent's
user (and root) can change the set. C{metaproxy ctl} is the client.
"""

from __future__ import annotations

from twisted.internet.defer import maybeDeferred
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure

from metaproxy.agent.registry import NamespaceRegistry, RegistryError
from metaproxy.namespace import InvalidNamespace, Namespace

__all__ = ["ControlProtocol", "ControlFactory"]

log = Logger("metaproxy.control")


class ControlProtocol(LineOnlyReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 1024

    def __init__(self, registry: NamespaceRegistry) -> None:
        self._registry = registry
        self._busy = False

    def lineReceived(self, line: bytes) -> None:
        if self._busy:
            return
        self._busy = True
        words = line.strip().decode("ascii", "replace").split()
        command, args = (words[0], words[1:]) if words else ("", [])
        if command == "list" and not args:
            self._reply("ok\n" + "".join(name + "\n" for name in self._registry.names()))
            return
        if command not in ("add", "remove") or len(args) != 1:
            self._reply("error: expected 'add <namespace>', 'remove <namespace>' or 'list'\n")
            return
        try:
            namespace = Namespace.parse(args[0])
        except InvalidNamespace as e:
            self._reply(f"error: {e}\n")
            return
        action = self._registry.add if command == "add" else self._registry.remove
        d = maybeDeferred(action, namespace)
        d.addCallbacks(
            lambda _: self._done(command, namespace), lambda f: self._error(command, namespace, f)
        )

    def _done(self, command: str, namespace: Namespace) -> None:
        log.info("Control: {command} {namespace}", command=command, namespace=namespace.name)
        self._reply("ok\n")

    def _error(self, command: str, namespace: Namespace, failure: Failure) -> None:
        if failure.check(RegistryError, OSError):
            message = str(failure.value)
        else:
            log.failure(
                "Control: {command} {namespace} failed",
                failure,
                command=command,
                namespace=namespace.name,
            )
            message = "internal error; see the agent's log"
        self._reply(f"error: {message}\n")

    def lineLengthExceeded(self, line: bytes) -> None:
        self._reply("error: command too long\n")

    def _reply(self, text: str) -> None:
        self.transport.write(text.encode("utf-8"))
        self.transport.loseConnection()


class ControlFactory(Factory):
    noisy = False

    def __init__(self, registry: NamespaceRegistry) -> None:
        self.registry = registry

    def buildProtocol(self, addr: object) -> ControlProtocol:
        return ControlProtocol(self.registry)
