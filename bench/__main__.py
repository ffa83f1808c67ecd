"""The bench's command line: C{python -m bench storm ...} and C{python -m bench compare ...}.

    python -m bench storm [--instances 1000] [--routers 50] [--concurrency 200]
                          [--target shared|namespaces|both|haproxy]
                          [--haproxy-socket shared|namespaces] [--keepalive] [--ramp 0]
                          [--workers 2] [--out bench/results] [--nova-delay 0]
                          [--secret S] [--wrong-secret] ...
    python -m bench compare --a metaproxy --b upstream [--c metaproxy-namespaces]
                            [--rounds 2] [--upstream-workers N]
                            [the storm's options but --target]

For each target it writes the fleet's table, starts the fake Nova and C{twistd metaproxy}
with L{bench.processes} (a fresh pair per target, so figures do not carry over), runs the
storm (L{bench.storm.run_storm}), prints the Markdown table and writes
C{<out>/<timestamp>-<target>.json}, C{.md}, C{.png} (with matplotlib) and
C{<out>/latest.md}.

C{--target haproxy} puts real haproxy in network namespaces in front of the agent
(L{bench.nstarget}, as root with C{ip}, C{iptables} and C{haproxy}): the namespaces are
built after the agent starts and removed after the storm, on Ctrl-C and SIGTERM too.

Exit status: 0 when every request was right; 1 otherwise. With C{--wrong-secret} the
agent signs with a secret Nova does not share, so every request must come back as an
error of kind C{status 403} (Nova's 403, relayed): 0 when that is so, 1 otherwise.

C{compare} is L{bench.compare}: the same storm against two agents (C{metaproxy},
C{metaproxy-namespaces}, C{upstream}) in one run, alternating A and B, with ratios.

L{short_storm} is the short storm C{make demo} ends with; L{start_stack},
L{start_nova}, L{start_metaproxy} and L{run_local_storms} are the pieces, for
C{bench compare} and the tests.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from bench.fleet import Fleet, make_fleet
from bench.lookups import LOOKUPS, RunningLookup, start_lookup
from bench.processes import (
    Process,
    start_agent,
    start_fakenova,
    wait_for_log,
    wait_for_socket,
    write_agent_config,
)
from bench.report import MATPLOTLIB_MISSING, StormResult, matplotlib_available
from bench.storm import StormConfig, run_storm
from metaproxy.namespace import namespace_socket_path

__all__ = [
    "Stack",
    "start_stack",
    "start_nova",
    "start_metaproxy",
    "run_local_storms",
    "short_storm",
    "write_results",
    "main",
]

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_SECRET = "bench-shared-secret"
AGENT_CONFIG = "agent.ini"


class Stack:
    """A fake Nova and an agent in front of it, in a short run directory under /tmp."""

    def __init__(
        self,
        run_dir: Path,
        nova: Process,
        nova_port: int,
        agent: Process | None,
        shared_socket: str,
        namespace_socket_dir: str,
        lookup: RunningLookup | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.lookup = lookup
        self.nova = nova
        self.nova_port = nova_port
        self.agent = agent
        self.shared_socket = shared_socket
        self.namespace_socket_dir = namespace_socket_dir

    @property
    def nova_url(self) -> str:
        return f"http://127.0.0.1:{self.nova_port}"

    @property
    def agent_config(self) -> Path:
        """The agent's configuration file (L{start_metaproxy} writes it)."""
        return self.run_dir / AGENT_CONFIG

    @property
    def pids(self) -> list[int]:
        """Every process of the stack: the agent, the fake Nova, the lookup service."""
        return [p.pid for p in (self.agent, self.nova) if p is not None] + (
            list(self.lookup.pids) if self.lookup is not None else []
        )

    def stop(self) -> None:
        for process in (self.agent, self.nova):
            if process is not None:
                process.stop()
        if self.lookup is not None:
            self.lookup.stop()


def new_run_dir() -> Path:
    """A fresh run directory. Short, under /tmp: a socket path must stay within 97 bytes
    (C{qrouter-<uuid>.sock} alone is 50)."""
    return Path(tempfile.mkdtemp(prefix="mpb-", dir="/tmp"))


def start_nova(
    table: Path, run: Path, *, secret: str = DEFAULT_SECRET, nova_delay: float = 0.0
) -> tuple[Process, int]:
    """The fake Nova on C{table} (its log in C{<run>/nova}); returns it and its port.

    @param nova_delay: its C{--delay} (seconds before each answer).
    """
    extra = ["--max-recorded", "100"]
    if nova_delay:
        extra += ["--delay", str(nova_delay)]
    return start_fakenova(table, secret, run / "nova", extra_args=extra)


def start_metaproxy(
    fleet: Fleet,
    table: Path,
    run: Path,
    *,
    nova_port: int,
    secret: str,
    extra_metaproxy: str = "",
    lookup: RunningLookup | None = None,
) -> tuple[Process, str, str]:
    """C{twistd metaproxy} on C{table} serving the shared socket and one socket per
    namespace of the fleet, everything under C{run}; waits for all its sockets.

    @param lookup: the started lookup service it uses (L{bench.lookups}); default: the
        table itself.

    @return: the process, the shared socket's path, the per-namespace socket directory.
    """
    state, ns_dir = run / "s", run / "ns"
    config = write_agent_config(
        run / AGENT_CONFIG,
        state_path=state,
        nova_port=nova_port,
        secret=secret,
        table=table,
        namespaces=fleet.namespace_names(),
        extra_default=lookup.extra_default if lookup else "",
        extra_metaproxy=(
            f"namespace_socket_dir = {ns_dir}\n{extra_metaproxy}"
            + (lookup.extra_metaproxy if lookup else "")
        ),
        extra_sections=lookup.extra_sections if lookup else "",
    )
    shared = str(state / "metadata_proxy")
    agent = start_agent([config], run / "agent", wait_socket=shared)
    try:
        for namespace in fleet.namespaces:
            wait_for_socket(namespace_socket_path(str(ns_dir), namespace), 30, agent)
        if lookup is not None and lookup.ready_line:
            wait_for_log(agent, lookup.ready_line, 60)
    except BaseException:
        agent.stop()
        raise
    return agent, shared, str(ns_dir)


def start_stack(
    fleet: Fleet,
    *,
    secret: str = DEFAULT_SECRET,
    agent_secret: str | None = None,
    nova_delay: float = 0.0,
    run_dir: Path | None = None,
    extra_metaproxy: str = "",
    lookup: str = "table",
) -> Stack:
    """Write the fleet's table, start the fake Nova, the lookup service and C{twistd
    metaproxy} serving the shared socket and one socket per namespace of the fleet; wait
    for all sockets.

    @param agent_secret: the agent's secret, if not Nova's (C{--wrong-secret}).
    @param nova_delay: the fake Nova's C{--delay} (seconds before each answer).
    @param lookup: a key of L{bench.lookups.LOOKUPS}: where the agent looks instances up.
    """
    run = run_dir if run_dir is not None else new_run_dir()
    table = run / "ports.json"
    fleet.write(table)
    nova, nova_port = start_nova(table, run, secret=secret, nova_delay=nova_delay)
    running = None
    try:
        running = start_lookup(lookup, table, run / "lookup")
        agent, shared, ns_dir = start_metaproxy(
            fleet,
            table,
            run,
            nova_port=nova_port,
            secret=agent_secret if agent_secret is not None else secret,
            extra_metaproxy=extra_metaproxy,
            lookup=running,
        )
    except BaseException:
        nova.stop()
        if running is not None:
            running.stop()
        raise
    return Stack(run, nova, nova_port, agent, shared, ns_dir, running)


def run_local_storms(
    fleet: Fleet,
    config: StormConfig,
    targets: Sequence[str],
    *,
    secret: str = DEFAULT_SECRET,
    agent_secret: str | None = None,
    nova_delay: float = 0.0,
    keep: bool = False,
    lookup: str = "table",
    haproxy_socket: str = "shared",
) -> list[StormResult]:
    """One storm per target (C{shared}, C{namespaces}, C{haproxy}), each on a fresh fake
    Nova, lookup service and agent. The config's socket paths are filled in from the
    stack; for C{haproxy} the namespaces and haproxy (forwarding to the agent's
    C{haproxy_socket}: C{shared} or C{namespaces}) are built in front of it, and removed
    after the storm."""
    import attrs

    results = []
    for target in targets:
        stack = start_stack(
            fleet, secret=secret, agent_secret=agent_secret, nova_delay=nova_delay, lookup=lookup
        )
        front = None
        try:
            with _sigterm_interrupts():
                run_config = attrs.evolve(
                    config,
                    target=target,
                    shared_socket=stack.shared_socket,
                    namespace_socket_dir=stack.namespace_socket_dir,
                    nova_url=stack.nova_url,
                )
                storm_target = None
                if target == "haproxy":
                    from bench.nstarget import start_haproxy_front

                    front = start_haproxy_front(
                        fleet,
                        config.instances,
                        agent_config=stack.agent_config,
                        socket=haproxy_socket,
                        adopt=stack.pids,
                    )
                    print(front.describe_setup(), file=sys.stderr, flush=True)
                    storm_target = front.target
                assert stack.agent is not None
                result = run_storm(
                    run_config,
                    fleet,
                    [stack.agent.pid],
                    target=storm_target,
                    nova_pids=[stack.nova.pid],
                )
            if not stack.agent.alive():
                raise RuntimeError(f"the agent died during the storm:\n{stack.agent.log()[-3000:]}")
            results.append(result)
        finally:
            if front is not None:
                front.stop()
            stack.stop()
            if not keep:
                shutil.rmtree(stack.run_dir, ignore_errors=True)
            else:
                print(f"run directory kept: {stack.run_dir}", file=sys.stderr)
    return results


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """While inside, SIGTERM raises KeyboardInterrupt as Ctrl-C does, so the clean-up
    (namespaces, haproxy, agent) runs; Python's default would end the process without
    it. Only in the main thread (where signals can be handled)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def short_storm(
    instances: int = 50, *, routers: int = 5, concurrency: int = 20, target: str = "both"
) -> str:
    """A short storm (C{make demo} ends with it): C{instances} boots over C{routers}
    routers through both kinds of socket; returns the Markdown tables."""
    fleet = make_fleet(instances, routers)
    config = StormConfig(
        instances=instances,
        routers=routers,
        concurrency=concurrency,
        workers=1,
        request_timeout=10.0,
    )
    results = run_local_storms(fleet, config, _targets(target))
    return "\n".join(result.to_markdown() for result in results)


def _targets(target: str) -> list[str]:
    return ["namespaces", "shared"] if target == "both" else [target]


def write_results(
    results: Sequence[StormResult], out: Path, stamp: str, command: str
) -> list[Path]:
    """C{<out>/<stamp>-<target>.json/.md/.png} per result and C{<out>/latest.md}."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for result in results:
        base = out / f"{stamp}-{result.target}"
        Path(f"{base}.json").write_text(result.to_json())
        Path(f"{base}.md").write_text(result.to_markdown())
        written += [Path(f"{base}.json"), Path(f"{base}.md")]
        if result.plot(f"{base}.png"):
            written.append(Path(f"{base}.png"))
    latest = out / "latest.md"
    latest.write_text(
        f"# Boot storm, {stamp}\n\n`{command}`\n\n"
        + "\n".join(result.to_markdown() for result in results)
    )
    written.append(latest)
    return written


def _storm_options(parser: argparse.ArgumentParser, *, target: bool = True) -> None:
    fleet = parser.add_argument_group("fleet")
    fleet.add_argument("--instances", type=int, default=1000, help="boots (default %(default)s)")
    fleet.add_argument("--routers", type=int, default=50, help="routers (default %(default)s)")
    fleet.add_argument("--networks-per-router", type=int, default=1)
    fleet.add_argument(
        "--dhcp-networks", type=int, default=0, help="DHCP (qdhcp-) namespaces besides the routers"
    )
    fleet.add_argument(
        "--ovn-networks", type=int, default=0, help="OVN (ovnmeta-) namespaces besides the routers"
    )
    fleet.add_argument("--seed", type=int, default=0, help="fleet generator seed")
    load = parser.add_argument_group("load")
    load.add_argument(
        "--concurrency",
        type=int,
        default=200,
        help="boots in progress at once (default %(default)s)",
    )
    if target:
        load.add_argument(
            "--target",
            choices=["shared", "namespaces", "both", "haproxy"],
            default="both",
            help="the shared socket, per-namespace sockets, both in turn, or "
            "haproxy in network namespaces in front of the agent, the "
            "instances connecting from their own namespaces (root, ip, "
            "iptables, haproxy)",
        )
        load.add_argument(
            "--haproxy-socket",
            choices=["shared", "namespaces"],
            default="shared",
            help="with --target haproxy: haproxy forwards to the agent's shared "
            "socket (as Neutron's haproxy does; default) or to each "
            "namespace's own socket",
        )
    load.add_argument(
        "--keepalive",
        action="store_true",
        help="reuse a boot's connection (default: one connection per request, "
        "as haproxy's http-server-close)",
    )
    load.add_argument(
        "--ramp",
        type=float,
        default=0.0,
        help="seconds over which boots start (default 0: all at once)",
    )
    load.add_argument(
        "--workers", type=int, default=2, help="generator processes (default %(default)s)"
    )
    load.add_argument(
        "--request-timeout",
        type=float,
        default=30.0,
        help="seconds per request (default %(default)s)",
    )
    run = parser.add_argument_group("run")
    run.add_argument(
        "--out", type=Path, default=RESULTS, help="results directory (default bench/results)"
    )
    run.add_argument(
        "--nova-delay",
        type=float,
        default=0.0,
        help="the fake Nova waits this long before each answer",
    )
    run.add_argument(
        "--lookup",
        choices=sorted(LOOKUPS),
        default="table",
        help="where the agent looks instances up (default %(default)s)",
    )
    run.add_argument("--secret", default=DEFAULT_SECRET, help="metadata_proxy_shared_secret")
    run.add_argument(
        "--wrong-secret",
        action="store_true",
        help="give the agent a secret Nova does not share: every request must "
        "be reported as an error 'status 403'",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    run.add_argument("--keep", action="store_true", help="keep the run directories (logs)")


def fleet_and_config(args: argparse.Namespace, command: str) -> tuple[Fleet, StormConfig] | None:
    """The fleet and storm configuration the storm options describe, or C{None} (after
    saying why on stderr) when they are not valid. Shared by C{storm} and C{compare}."""
    if args.nova_delay < 0:
        print("--nova-delay must not be negative", file=sys.stderr)
        return None
    try:
        fleet = make_fleet(
            args.instances,
            args.routers,
            networks_per_router=args.networks_per_router,
            dhcp_networks=args.dhcp_networks,
            ovn_networks=args.ovn_networks,
            seed=args.seed,
        )
        config = StormConfig(
            instances=args.instances,
            routers=args.routers,
            concurrency=args.concurrency,
            ramp=args.ramp,
            keepalive=args.keepalive,
            workers=args.workers,
            request_timeout=args.request_timeout,
            progress=not args.no_progress,
        )
    except ValueError as e:
        print(f"bench {command}: {e}", file=sys.stderr)
        return None
    return fleet, config


def _storm(args: argparse.Namespace, argv: Sequence[str]) -> int:
    made = fleet_and_config(args, "storm")
    if made is None:
        return 2
    fleet, config = made
    if args.target == "haproxy":
        from bench.nstarget import missing_line

        missing = missing_line()
        if missing:
            print(f"bench storm: {missing}", file=sys.stderr)
            return 2
    agent_secret = args.secret + "-but-wrong" if args.wrong_secret else None
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    print(
        f"boot storm: {fleet.describe()}; {config.concurrency} concurrent boots; "
        f"targets {', '.join(_targets(args.target))}; lookups: {args.lookup}",
        file=sys.stderr,
    )
    try:
        results = run_local_storms(
            fleet,
            config,
            _targets(args.target),
            secret=args.secret,
            agent_secret=agent_secret,
            nova_delay=args.nova_delay,
            keep=args.keep,
            lookup=args.lookup,
            haproxy_socket=args.haproxy_socket,
        )
    except KeyboardInterrupt:
        print("bench storm: interrupted; what it started is stopped and removed", file=sys.stderr)
        return 130
    command = "python -m bench " + " ".join(argv)
    written = write_results(results, args.out, stamp, command)
    for result in results:
        print(result.to_markdown())
    if not matplotlib_available():
        print(MATPLOTLIB_MISSING, file=sys.stderr)
    print("written: " + ", ".join(str(p) for p in written), file=sys.stderr)

    failed = False
    for result in results:
        if args.wrong_secret:
            if result.good or result.errors != {"status 403": result.requests}:
                print(
                    f"{result.target}: with the wrong secret every request must be an error "
                    f"'status 403'; got {result.good} good and {result.errors}",
                    file=sys.stderr,
                )
                failed = True
        elif result.error_count or result.boots_failed:
            print(
                f"{result.target}: {result.error_count} errors, {result.boots_failed} boots failed",
                file=sys.stderr,
            )
            failed = True
    return 1 if failed else 0


def _compare(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from bench.compare import compare_main

    return compare_main(args, argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="metaproxy's benchmark: boot storms."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    storm = commands.add_parser(
        "storm",
        help="run the boot storm against metaproxy",
        description="Boot storm: N instances run cloud-init's metadata sequence against metaproxy.",
    )
    _storm_options(storm)
    compare = commands.add_parser(
        "compare",
        help="the same storm against two agents, alternating, with ratios",
        description="The same boot storm against two agents (three with --c) in one run "
        "(one fleet, one fake Nova), rounds alternating A, B, A, B, then the "
        "figures side by side with the ratios B / A (and C / A). Agents: "
        "metaproxy (shared socket), "
        "metaproxy-namespaces (per-namespace sockets), upstream (upstream's "
        "neutron-metadata-agent, installed into its own virtualenv the first "
        "time). Exit status 0 when every metaproxy request was right; "
        "upstream's errors are results, not failures.",
    )
    from bench.compare import add_compare_options

    add_compare_options(compare)
    _storm_options(compare, target=False)
    args = parser.parse_args(argv)
    if args.command == "storm":
        return _storm(args, argv)
    return _compare(args, argv)


if __name__ == "__main__":
    sys.exit(main())
