"""Storms on a local stack: one fresh fake Nova, lookup service and agent per target.

L{run_local_storms} is what C{python -m bench storm} runs, L{short_storm} the short storm
C{make demo} ends with, and L{write_results} writes their JSON, Markdown and PNG files.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.load.fleet import Fleet, make_fleet
from bench.load.report import StormResult
from bench.load.storm import StormConfig, run_storm
from bench.options import targets
from bench.stack import DEFAULT_SECRET, sigterm_interrupts, start_stack

__all__ = ["run_local_storms", "short_storm", "write_results"]


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
    """One storm per target (C{shared}, C{namespaces}, C{haproxy}, C{namespaces-tcp}),
    each on a fresh fake Nova, lookup service and agent. The config's socket paths are
    filled in from the stack; for C{haproxy} the namespaces and haproxy (forwarding to
    the agent's C{haproxy_socket}: C{shared} or C{namespaces}) are built in front of it,
    and removed after the storm, haproxy's CPU measured with the agent's; for
    C{namespaces-tcp} the router namespaces without haproxy, the agent serving them
    itself (its fleet's routers renamed after the topology)."""
    import attrs

    results = []
    for target in targets:
        run_fleet, extra, topology = fleet, "", None
        if target == "namespaces-tcp":
            from bench.load.netns import Topology
            from bench.load.routerfront import router_fleet, router_mode_config

            topology = Topology()
            try:
                run_fleet = router_fleet(fleet, topology)
            except ValueError:
                topology.cleanup()
                raise
            extra = router_mode_config(topology)
        try:
            stack = start_stack(
                run_fleet,
                secret=secret,
                agent_secret=agent_secret,
                nova_delay=nova_delay,
                lookup=lookup,
                extra_metaproxy=extra,
            )
        except BaseException:
            if topology is not None:
                topology.cleanup()
            raise
        front = None
        try:
            with sigterm_interrupts():
                run_config = attrs.evolve(
                    config,
                    target=target,
                    shared_socket=stack.shared_socket,
                    namespace_socket_dir=stack.namespace_socket_dir,
                    nova_url=stack.nova_url,
                )
                storm_target = None
                if target == "haproxy":
                    from bench.load.nstarget import start_haproxy_front

                    front = start_haproxy_front(
                        fleet,
                        config.instances,
                        agent_config=stack.agent_config,
                        socket=haproxy_socket,
                        adopt=stack.pids,
                    )
                    print(front.describe_setup(), file=sys.stderr, flush=True)
                    storm_target = front.target
                elif target == "namespaces-tcp":
                    from bench.load.routerfront import start_router_front

                    assert topology is not None
                    front = start_router_front(
                        topology, run_fleet, config.instances, adopt=stack.pids
                    )
                    print(front.describe_setup(), file=sys.stderr, flush=True)
                    storm_target = front.target
                assert stack.agent is not None
                result = run_storm(
                    run_config,
                    run_fleet,
                    [stack.agent.pid],
                    target=storm_target,
                    nova_pids=[stack.nova.pid],
                    proxy_pids=front.proxy_pids() if front is not None else (),
                )
            if not stack.agent.alive():
                raise RuntimeError(f"the agent died during the storm:\n{stack.agent.log()[-3000:]}")
            results.append(result)
        finally:
            if front is not None:
                front.stop()
            elif topology is not None:
                topology.cleanup()
            stack.stop()
            if not keep:
                shutil.rmtree(stack.run_dir, ignore_errors=True)
            else:
                print(f"run directory kept: {stack.run_dir}", file=sys.stderr)
    return results


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
    results = run_local_storms(fleet, config, targets(target))
    return "\n".join(result.to_markdown() for result in results)


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
