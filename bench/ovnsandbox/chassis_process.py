"""metaproxy's chassis mode in a process of its own, for the OVN comparison.

    python -m bench.ovnsandbox.chassis_process --config-file metaproxy.ini \\
        --ovs unix:/tmp/mpovn-ab12/ovs.sock --namespace-prefix ovnmeta-ab12 \\
        --log-file chassis.log

It builds what the service builds for requests (L{metaproxy.agent.service.Proxy}: the
OVN lookups on C{[ovn] ovn_sb_connection}, the Nova client, the pipeline, the limits),
and L{metaproxy.chassis.mode.ChassisMode} around it, whose in-namespace listeners are
served by that pipeline: the same objects C{twistd metaproxy} would assemble, without
the rest of the service (no shared socket, no control or ops listeners). It runs until
SIGTERM or SIGINT, then stops the mode (the namespaces stay, as upstream's do).

C{--namespace-prefix} narrows the namespaces it owns (the sandbox's network ids start
with its tag), so that other C{ovnmeta-} namespaces on the host are left alone.
"""

from __future__ import annotations

import argparse
import signal
import sys

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver

__all__ = ["main", "write_metaproxy_config"]

log = Logger()


def write_metaproxy_config(
    path, *, state_path: str, sb_connection: str, nova_port: int, secret: str
) -> None:
    """The configuration the chassis process reads: OVN lookups, Nova, the secret."""
    path.write_text(
        "[DEFAULT]\n"
        f"state_path = {state_path}\n"
        "nova_metadata_host = 127.0.0.1\n"
        f"nova_metadata_port = {nova_port}\n"
        f"metadata_proxy_shared_secret = {secret.replace('$', '$$')}\n"
        "\n[metaproxy]\n"
        "lookup_backend = ovn\n"
        "\n[ovn]\n"
        f"ovn_sb_connection = {sb_connection}\n"
    )


async def _run(reactor, args: argparse.Namespace) -> None:
    from metaproxy.agent.service import Proxy
    from metaproxy.chassis.mode import ChassisMode
    from metaproxy.config import load_settings
    from metaproxy.http.server import MetadataFactory
    from metaproxy.ovsdb.remote import parse_remotes
    from metaproxy.resolve.backends import start_backend, stop_backend

    settings = load_settings(args.config_file, [])
    proxy = Proxy(reactor, settings)

    def factory_for(namespace, from_peer):
        return MetadataFactory(
            proxy.pipeline,
            namespace,
            proxy.limits,
            reactor,
            stats=proxy.stats,
            request_from_peer=from_peer,
        )

    mode = ChassisMode(
        reactor,
        ovs_remotes=parse_remotes(args.ovs),
        sb_remotes=parse_remotes(settings.ovn_sb_connection),
        factory_for=factory_for,
        namespace_prefix=args.namespace_prefix,
        probe_interval=0,
        retry_max_interval=5,
    )
    start_backend(proxy.backend)
    mode.start()
    log.info("chassis mode started ({prefix}*)", prefix=args.namespace_prefix)
    stopping: Deferred[None] = Deferred()

    def on_signal(signum, frame):
        reactor.callFromThread(lambda: stopping.called or stopping.callback(None))

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    await stopping
    log.info("stopping the chassis mode")
    await mode.stop()
    await stop_backend(proxy.backend)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ovnsandbox.chassis_process")
    parser.add_argument("--config-file", action="append", required=True)
    parser.add_argument("--ovs", required=True, help="the local Open_vSwitch database")
    parser.add_argument("--namespace-prefix", default="ovnmeta-")
    parser.add_argument("--log-file", required=True)
    args = parser.parse_args(argv)
    globalLogBeginner.beginLoggingTo(
        [textFileLogObserver(open(args.log_file, "a"))], redirectStandardIO=False
    )
    from twisted.internet import reactor

    failed: list[object] = []

    def failure(reason) -> None:
        failed.append(reason)
        log.failure("the chassis process failed", reason)

    def run() -> None:
        running = ensureDeferred(_run(reactor, args))
        running.addErrback(failure)
        running.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(run)
    reactor.run(installSignalHandlers=False)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
