"""The soak: repeated boot storms against one agent while faults are injected.

    python -m bench.soak [--rounds 10] [--instances 200] [--routers 10]
                         [--concurrency 50] [--target shared] [--outage 1.0] [--churn 5]
    make soak ARGS='--rounds 40'

One fake Nova and one C{twistd metaproxy} (L{bench.stack.start_stack}) live for the
whole run. Round 1 is a warm-up storm without faults; every later round is a storm
(L{bench.load.storm.run_storm}) with:

  - B{secret rotation} before the storm: a new secret in Nova (restarted with it on the
    same port) and in the agent's file, then SIGHUP; the storm that follows must be
    clean, so the agent signs with the new secret;
  - B{Nova outage} during the storm: once the fake Nova has served C{--outage-at} of
    the storm's requests it is stopped, and restarted C{--outage} seconds later on the
    same port. The agent answers 503 with
    Retry-After meanwhile (documented; the storm's boots do not retry, so a boot that
    gets one ends there);
  - B{namespace churn} during the storm: C{--churn} namespaces the storm does not use
    are added with C{metaproxy ctl add} (their sockets must appear) and removed again
    (their sockets must go), while the storm's own namespaces keep serving.

Lost requests are every error other than a 503 (wrong answers, refused or dropped
connections, other statuses): there must be none. After each round, once the idle Nova
connections have expired, the agent's RSS and open descriptors are read from /proc;
they must stay flat after the warm-up round: the same descriptors (within
C{--fd-slack}) and RSS within C{--rss-slack-mib}. Exit status 0 when all holds, 1
otherwise. The report is a Markdown table on standard output.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import attrs

from bench.load.fleet import make_fleet
from bench.load.procstat import rss_bytes
from bench.load.storm import StormConfig, run_storm
from bench.processes import Process, start_fakenova, wait_for_socket
from bench.stack import DEFAULT_SECRET, Stack, new_run_dir, start_stack
from metaproxy.namespace import Namespace, namespace_socket_path

__all__ = ["SoakRound", "open_fds", "lost_requests", "restart_nova", "main"]

#: seconds the agent keeps an idle Nova connection (metaproxy.nova.client), plus a margin
POOL_IDLE = 5.0


@attrs.define
class SoakRound:
    number: int
    faults: str
    requests: int
    good: int
    unavailable: int
    lost: int
    lost_kinds: dict
    rss_mib: float
    fds: int
    churned: int


def open_fds(pid: int) -> int:
    """Open descriptors of C{pid} (its /proc/<pid>/fd entries)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def lost_requests(errors: dict[str, int]) -> dict[str, int]:
    """The errors that count as lost: everything but the documented 503s."""
    return {kind: n for kind, n in errors.items() if n and kind != "status 503"}


def restart_nova(stack: Stack, secret: str) -> None:
    """Stop the fake Nova and start it again on the same port with C{secret}."""
    stack.nova.stop()
    table = stack.run_dir / "ports.json"
    deadline = time.monotonic() + 20
    while True:
        try:
            stack.nova, _ = start_fakenova(
                table,
                secret,
                stack.run_dir / "nova",
                extra_args=[
                    "--max-recorded",
                    "100",
                    "--listen",
                    f"tcp:{stack.nova_port}:interface=127.0.0.1",
                ],
            )
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)  # the port is still held for a moment


def _rotate_secret(stack: Stack, agent: Process, new: str, old: str) -> None:
    config = stack.run_dir / "agent.ini"
    text = config.read_text()
    config.write_text(
        text.replace(
            f"metadata_proxy_shared_secret = {old}\n", f"metadata_proxy_shared_secret = {new}\n"
        )
    )
    restart_nova(stack, new)
    before = agent.log().count("Reloaded:")
    agent.popen.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while agent.log().count("Reloaded:") <= before:
        if time.monotonic() > deadline:
            raise RuntimeError("the agent did not log its reload within 20 s")
        time.sleep(0.05)


def _ctl(config: Path, action: str, names: list[str]) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "metaproxy.cli",
            "ctl",
            action,
            *names,
            "--config-file",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        raise RuntimeError(f"metaproxy ctl {action} failed: {done.stderr.strip()}")


def _churn(stack: Stack, round_number: int, count: int, errors: list[str]) -> int:
    """Add C{count} namespaces, wait for their sockets, remove them, wait until gone."""
    config = stack.run_dir / "agent.ini"
    names = [Namespace.parse(f"qrouter-soak{round_number}-{i}") for i in range(count)]
    try:
        _ctl(config, "add", [n.name for n in names])
        for ns in names:
            wait_for_socket(namespace_socket_path(stack.namespace_socket_dir, ns), 20)
        _ctl(config, "remove", [n.name for n in names])
        deadline = time.monotonic() + 20
        for ns in names:
            while os.path.exists(namespace_socket_path(stack.namespace_socket_dir, ns)):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{ns.name}'s socket still there after remove")
                time.sleep(0.05)
    except Exception as e:
        errors.append(f"namespace churn: {e}")
        return 0
    return count


def _nova_served(stack: Stack) -> int:
    request = urllib.request.Request(
        f"{stack.nova_url}/_fakenova/stats", headers={"X-Fakenova-Control": "1"}
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        return int(json.loads(answer.read())["total"])


def _outage(stack: Stack, secret: str, after: int, seconds: float, errors: list[str]) -> None:
    """Once Nova has served C{after} requests of this storm, stop it for C{seconds}."""
    try:
        deadline = time.monotonic() + 120
        while _nova_served(stack) < after:
            if time.monotonic() > deadline:
                raise RuntimeError(f"Nova did not serve {after} requests within 120 s")
            time.sleep(0.01)
        stack.nova.stop()
        time.sleep(seconds)
        restart_nova(stack, secret)
    except Exception as e:
        errors.append(f"Nova restart: {e}")


def _metrics(path: str) -> str:
    import socket as _socket

    with _socket.socket(_socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.partition(b"\r\n\r\n")[2].decode()


def _sample(pid: int) -> tuple[float, int]:
    time.sleep(POOL_IDLE)  # idle Nova connections expire first
    return rss_bytes(pid) / 2**20, open_fds(pid)


def run_soak(args: argparse.Namespace) -> int:
    fleet = make_fleet(args.instances, args.routers)
    config = StormConfig(
        instances=args.instances,
        routers=args.routers,
        concurrency=args.concurrency,
        workers=1,
        request_timeout=10.0,
        target=args.target,
    )
    metrics_sock = None
    stack = None
    rounds: list[SoakRound] = []
    problems: list[str] = []
    try:
        run = new_run_dir()
        metrics_sock = str(run / "m.sock")
        stack = start_stack(
            fleet, run_dir=run, extra_metaproxy=f"metrics_listen = unix:{metrics_sock}\n"
        )
        agent = stack.agent
        assert agent is not None
        config = attrs.evolve(
            config,
            shared_socket=stack.shared_socket,
            namespace_socket_dir=stack.namespace_socket_dir,
            nova_url=None,
        )  # Nova goes down: no counters asked
        secret = DEFAULT_SECRET
        for number in range(1, args.rounds + 1):
            faults, errors, threads, churned = [], [], [], [0]
            if number > 1:
                new = f"soak-secret-{number}"
                _rotate_secret(stack, agent, new, secret)
                secret = new
                faults.append("secret rotated")
                after = max(1, int(args.instances * 28 * args.outage_at))
                threads.append(
                    threading.Thread(
                        target=_outage, args=(stack, secret, after, args.outage, errors)
                    )
                )
                faults.append(f"Nova down {args.outage:g} s")
                if args.churn:
                    threads.append(
                        threading.Thread(
                            target=lambda n=number, out=churned, errs=errors: out.__setitem__(
                                0, _churn(stack, n, args.churn, errs)
                            )
                        )
                    )
                    faults.append(f"{args.churn} namespaces churned")
            for t in threads:
                t.start()
            result = run_storm(config, fleet, [agent.pid])
            for t in threads:
                t.join()
            if not agent.alive():
                raise RuntimeError(f"the agent died:\n{agent.log()[-3000:]}")
            rss, fds = _sample(agent.pid)
            lost = lost_requests(result.errors)
            rounds.append(
                SoakRound(
                    number,
                    ", ".join(faults) or "warm-up",
                    result.requests,
                    result.good,
                    result.errors.get("status 503", 0),
                    sum(lost.values()),
                    lost,
                    rss,
                    fds,
                    churned[0],
                )
            )
            problems += [f"round {number}: {e}" for e in errors]
            r = rounds[-1]
            print(
                f"round {number}/{args.rounds}: {r.requests} requests, {r.good} good, "
                f"{r.unavailable} 503, {r.lost} lost, RSS {r.rss_mib:.1f} MiB, "
                f"{r.fds} fds",
                file=sys.stderr,
                flush=True,
            )
        scraped = _metrics(metrics_sock)
    finally:
        if stack is not None:
            stack.stop()
            if not args.keep:
                shutil.rmtree(stack.run_dir, ignore_errors=True)
            else:
                print(f"run directory kept: {stack.run_dir}", file=sys.stderr)
    return _report(args, rounds, problems, scraped)


def _report(
    args: argparse.Namespace, rounds: list[SoakRound], problems: list[str], scraped: str
) -> int:
    print("| round | faults | requests | good | 503 (Nova down) | lost | RSS MiB | fds |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rounds:
        print(
            f"| {r.number} | {r.faults} | {r.requests} | {r.good} | {r.unavailable} | "
            f"{r.lost}{' ' + str(r.lost_kinds) if r.lost_kinds else ''} | "
            f"{r.rss_mib:.1f} | {r.fds} |"
        )
    lost = sum(r.lost for r in rounds)
    if lost:
        problems.append(f"{lost} request(s) lost (errors other than 503)")
    for r in rounds[1:]:
        if r.number > 1 and r.faults != "warm-up" and r.good == 0:
            problems.append(f"round {r.number}: no good answer at all")
    if len(rounds) >= 2:
        warm, last = rounds[0], rounds[-1]
        growth = last.rss_mib - warm.rss_mib
        print(
            f"\nafter the warm-up round: RSS {warm.rss_mib:.1f} -> {last.rss_mib:.1f} MiB "
            f"({growth:+.1f}), open descriptors {warm.fds} -> {last.fds}"
        )
        if growth > args.rss_slack_mib:
            problems.append(f"RSS grew {growth:.1f} MiB (more than {args.rss_slack_mib:g})")
        if last.fds - warm.fds > args.fd_slack:
            problems.append(f"open descriptors grew from {warm.fds} to {last.fds}")
    reloads = [line for line in scraped.splitlines() if line.startswith("metaproxy_reloads_total")]
    if reloads:
        print("agent metrics: " + "; ".join(reloads))
    for p in problems:
        print(f"PROBLEM: {p}")
    print("soak: OK" if not problems else "soak: FAILED")
    return 0 if not problems else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=10,
        help="storms, the first a warm-up without faults (default 10)",
    )
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--routers", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--target", choices=("shared", "namespaces"), default="shared")
    parser.add_argument(
        "--outage-at",
        type=float,
        default=0.3,
        help="share of a storm's requests (about 28 per instance) Nova "
        "serves before it is stopped (default 0.3)",
    )
    parser.add_argument(
        "--outage", type=float, default=1.0, help="seconds the fake Nova stays down"
    )
    parser.add_argument(
        "--churn",
        type=int,
        default=5,
        help="namespaces added and removed during each storm (0: none)",
    )
    parser.add_argument(
        "--rss-slack-mib",
        type=float,
        default=8.0,
        help="RSS growth after the warm-up round that still passes",
    )
    parser.add_argument(
        "--fd-slack",
        type=int,
        default=2,
        help="descriptor growth after the warm-up round that still passes",
    )
    parser.add_argument("--keep", action="store_true", help="keep the run directory")
    args = parser.parse_args(argv)
    if args.rounds < 2:
        parser.error("--rounds must be at least 2 (a warm-up and a round with faults)")
    return run_soak(args)


if __name__ == "__main__":
    sys.exit(main())
