"""ML2/OVN: the chassis agent's CPU per request as the number of boots at once varies.

    python -m bench.ovnsandbox.loadshape [--concurrency 5,20,60,200] [--rounds 2]
        [--networks 4] [--vms 5] [--boots-per-vm 10]

One sandbox (L{bench.ovnsandbox.OvnSandbox}) and one metaproxy chassis agent
(C{twistd metaproxy}, as L{bench.ovnsandbox.compare} starts it) for every storm, so the
storms differ only in how many boots run at once. Before the storms, the agent's CPU over
an idle window as long as a storm (its background work: the Southbound and OVS monitors,
provisioning). Then, per round, one storm (L{bench.ovnsandbox.guests.boot_storm}) per
concurrency, each reporting the agent's CPU per answered request, its reactor thread's
context switches per request (how often it went to sleep and was woken: the fewer
requests each wake-up serves, the more each request costs) and the requests per second.

The table is printed as Markdown. Exit status: 0; 1 when a storm was not fully answered;
2 for bad options or a host that cannot run it; 3 when the sandbox failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import attrs

from bench.ovnsandbox.agents import Footprint, cpu_delta, cpu_snapshot, start_agent
from bench.ovnsandbox.cloud import Cloud
from bench.ovnsandbox.compare import (
    SECRET,
    AgentRun,
    Options,
    _fast_neighbour_retries,
    _serving_phase,
    cidr_of,
    fleet_table,
)
from bench.ovnsandbox.daemons import OvnSandbox, SandboxError, missing
from bench.ovnsandbox.guests import boot_storm
from bench.processes import start_fakenova

__all__ = ["StormFigures", "context_switches", "run_time_ns", "markdown", "main"]


@attrs.frozen
class StormFigures:
    """One storm's figures."""

    concurrency: int
    round: int
    requests: int
    answered: int
    cpu_s: float
    wall_s: float
    switches: int

    @property
    def cpu_per_answer_us(self) -> float | None:
        return self.cpu_s / self.answered * 1e6 if self.answered else None

    @property
    def switches_per_request(self) -> float | None:
        return self.switches / self.answered if self.answered else None


def context_switches(pid: int, proc: str = "/proc") -> int:
    """Voluntary and involuntary context switches so far of C{pid}'s main thread (the
    reactor's); 0 if it is gone."""
    total = 0
    try:
        with open(f"{proc}/{pid}/status") as f:
            for line in f:
                if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                    total += int(line.split()[1])
    except OSError:
        return 0
    return total


def run_time_ns(pid: int, proc: str = "/proc") -> int:
    """CPU time so far of C{pid}'s threads, in nanoseconds (C{schedstat}: finer than the
    clock ticks of C{stat}, for an idle window); 0 if it is gone."""
    total = 0
    try:
        tasks = os.listdir(f"{proc}/{pid}/task")
    except OSError:
        return 0
    for task in tasks:
        try:
            with open(f"{proc}/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread gone meanwhile
    return total


def markdown(idle_cpu_s: float, idle_s: float, storms: list[StormFigures]) -> str:
    lines = [
        f"Idle window of {idle_s:.1f} s (as long as a storm): {idle_cpu_s * 1000:.2f} ms "
        "of agent CPU.",
        "",
        "| boots at once | round | answered | agent CPU per request | context switches "
        "per request | requests/s |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for s in storms:
        cpu = "-" if s.cpu_per_answer_us is None else f"{s.cpu_per_answer_us:.0f} us"
        switches = "-" if s.switches_per_request is None else f"{s.switches_per_request:.2f}"
        rate = s.answered / s.wall_s if s.wall_s else 0.0
        lines.append(
            f"| {s.concurrency} | {s.round} | {s.answered}/{s.requests} | {cpu} | {switches} "
            f"| {rate:,.0f} |"
        )
    return "\n".join(lines)


def _run(
    options: Options, concurrencies: list[int], rounds: int, run_dir: Path
) -> tuple[str, bool]:
    storms: list[StormFigures] = []
    with OvnSandbox.start() as sandbox:
        cloud = Cloud(sandbox)
        networks = [cloud.add_network(cidr_of(i)) for i in range(options.networks)]
        ports = [cloud.add_port(net) for net in networks for _ in range(options.vms)]
        table = run_dir / "ports.json"
        table.write_text(json.dumps(fleet_table(ports)))
        nova, nova_port = start_fakenova(table, SECRET, run_dir / "nova")
        agent = None
        try:
            instances = [cloud.plug(port) for port in ports]
            for instance in instances:
                _fast_neighbour_retries(instance)
                cloud.wait_bound(instance)
            sandbox.sync()
            agent = start_agent(
                "metaproxy", sandbox, run_dir / "metaproxy", nova_port=nova_port, secret=SECRET
            )
            firsts = {inst.port.network.id: inst for inst in reversed(instances)}
            _serving_phase(AgentRun("metaproxy", options), agent, firsts, options.serving_timeout)
            pids = Footprint.read(agent, [f"ovnmeta-{n.id}" for n in networks]).all_pids()
            namespaces = [inst.namespace for inst in instances]
            boots = options.vms * options.networks * options.boots_per_vm

            def storm(concurrency: int, round_number: int) -> StormFigures:
                switches = context_switches(agent.pid)
                before = cpu_snapshot(pids)
                tally = boot_storm(namespaces, boots=boots, concurrency=concurrency)
                cpu = cpu_delta(before, cpu_snapshot(pids))
                return StormFigures(
                    concurrency,
                    round_number,
                    tally.requests,
                    tally.answered,
                    cpu,
                    tally.wall_seconds,
                    context_switches(agent.pid) - switches,
                )

            warm = storm(concurrencies[0], 0)  # caches and pools warm before measuring
            idle_s = warm.wall_s
            time.sleep(1.0)
            before_ns = sum(run_time_ns(pid) for pid in pids)
            time.sleep(idle_s)
            idle_cpu = (sum(run_time_ns(pid) for pid in pids) - before_ns) / 1e9
            for round_number in range(1, rounds + 1):
                for concurrency in concurrencies:
                    storms.append(storm(concurrency, round_number))
        finally:
            if agent is not None:
                agent.stop()
            nova.stop()
    return markdown(idle_cpu, idle_s, storms), all(s.answered == s.requests for s in storms)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ovnsandbox.loadshape",
        description="the chassis agent's CPU per request as the boots at once vary, on a real "
        "OVN chassis (root, OVS/OVN packages).",
    )
    parser.add_argument("--concurrency", default="5,20,60,200", help="boots at once, in turn")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--networks", type=int, default=4)
    parser.add_argument("--vms", type=int, default=5, help="instances per network")
    parser.add_argument("--boots-per-vm", type=int, default=10)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]
        if not concurrencies or min(concurrencies) < 1 or args.rounds < 1:
            raise ValueError("--concurrency: boots at once, each at least 1; --rounds >= 1")
        options = Options(networks=args.networks, vms=args.vms, boots_per_vm=args.boots_per_vm)
    except ValueError as e:
        print(f"ovn-loadshape: {e}", file=sys.stderr)
        return 2
    problem = missing()
    if problem:
        print(f"ovn-loadshape: {problem}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="mpls-") as tmp:
        try:
            table, complete = _run(options, concurrencies, args.rounds, Path(tmp))
        except SandboxError as e:
            print(f"ovn-loadshape: the sandbox failed: {e}", file=sys.stderr)
            return 3
    print(table)
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
