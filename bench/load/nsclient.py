"""A stdlib-only HTTP client that boots like cloud-init, run inside an instance namespace.

    ip netns exec <instance ns> python -m bench.load.nsclient --base http://169.254.169.254
    ip netns exec <instance ns> python -m bench.load.nsclient \\
        --base 'http://[fe80::a9fe:a9fe%25eth0]' --first 7
    ip netns exec <instance ns> python -m bench.load.nsclient --base ... --path /openstack \\
        --header 'X-Neutron-Router-ID: other-router'

Without C{--path} it runs cloud-init's first-boot sequence (L{bench.load.cloudinit}: two
C{/openstack} probes, the five OpenStack files, the EC2 crawl), or its first C{--first N}
requests, each on a new connection with cloud-init's C{User-Agent}. With C{--path} it
asks exactly those paths, whatever they answer. It prints one JSON line::

    {"base": ..., "source": "<local address of the last connection>",
     "requests": [{"path", "status", "reason", "headers": [[k, v]...], "body": base64,
                   "source"}],
     "error": null | "<what stopped the run>", "failed": null | {"path", "status"}}

An IPv6 link-local base needs its zone (C{%25<interface>} or C{%<interface>}): the
connection is made to C{(address, port, 0, if_nametoindex(zone))} directly, so the
request leaves from that interface's own (EUI-64) link-local address.

Exit status 0 when every request got an answer (whatever its status) and the sequence,
if any, was one cloud-init accepts; 1 otherwise (the JSON says why).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import socket
import sys
from typing import Any
from urllib.parse import unquote, urlsplit

from bench.load.cloudinit import BootFailed, boot_sequence

__all__ = ["Target", "parse_base", "fetch", "run", "main"]

USER_AGENT = "Cloud-Init/24.4-nsclient"


class Target:
    """Where to connect: host (for the Host header), address tuple, socket family."""

    def __init__(self, host_header: str, family: int, address: tuple) -> None:
        self.host_header = host_header
        self.family = family
        self.address = address


def parse_base(base: str) -> Target:
    """C{http://host[:port]}; an IPv6 host in brackets may carry C{%25zone}."""
    parts = urlsplit(base)
    if parts.scheme != "http":
        raise ValueError(f"{base!r}: only http:// is supported")
    netloc = parts.netloc
    port = 80
    if netloc.startswith("["):
        host, _, rest = netloc[1:].partition("]")
        if rest.startswith(":"):
            port = int(rest[1:])
        host = unquote(host)
        address, _, zone = host.partition("%")
        scope = socket.if_nametoindex(zone) if zone else 0
        header = f"[{address}]" + (f":{port}" if port != 80 else "")
        return Target(header, socket.AF_INET6, (address, port, 0, scope))
    host, _, port_text = netloc.partition(":")
    if port_text:
        port = int(port_text)
    return Target(netloc, socket.AF_INET, (host, port))


class _Connection(http.client.HTTPConnection):
    def __init__(self, target: Target, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._target = target
        self.source: str | None = None

    def connect(self) -> None:
        sock = socket.socket(self._target.family, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._target.address)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.source = sock.getsockname()[0]


def fetch(
    target: Target, path: str, headers: list[tuple[str, str]], timeout: float
) -> dict[str, Any]:
    """GET C{path} on a new connection; the answer as a JSON-ready dict."""
    conn = _Connection(target, timeout)
    try:
        conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", target.host_header)
        conn.putheader("User-Agent", USER_AGENT)
        conn.putheader("Accept", "*/*")
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        body = response.read()
        return {
            "path": path,
            "status": response.status,
            "reason": response.reason,
            "headers": [[k, v] for k, v in response.getheaders()],
            "body": base64.b64encode(body).decode("ascii"),
            "source": conn.source,
        }
    finally:
        conn.close()


def run(
    base: str,
    *,
    paths: list[str] | None = None,
    first: int | None = None,
    headers: list[tuple[str, str]] = (),
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Run the sequence (or the paths) against C{base}; the JSON-ready report."""
    report: dict[str, Any] = {
        "base": base,
        "source": None,
        "requests": [],
        "error": None,
        "failed": None,
    }
    requests: list[dict[str, Any]] = report["requests"]
    try:
        target = parse_base(base)
    except (ValueError, OSError) as e:
        report["error"] = f"bad base URL: {e}"
        return report

    def ask(path: str) -> dict[str, Any]:
        answer = fetch(target, path, list(headers), timeout)
        requests.append(answer)
        report["source"] = answer["source"]
        return answer

    try:
        if paths:
            for path in paths:
                ask(path)
            return report
        sequence = boot_sequence()
        path = next(sequence)
        while first is None or len(requests) < first:
            answer = ask(path)
            try:
                path = sequence.send((answer["status"], base64.b64decode(answer["body"])))
            except StopIteration:
                break
    except BootFailed as e:
        report["failed"] = {"path": e.path, "status": e.status}
        report["error"] = f"cloud-init would stop: {e}"
    except (OSError, http.client.HTTPException) as e:
        report["error"] = f"{type(e).__name__}: {e}"
    return report


def _header(value: str) -> tuple[str, str]:
    name, sep, rest = value.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"{value!r} is not NAME:VALUE")
    return name.strip(), rest.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.load.nsclient", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--base", required=True, help="http://169.254.169.254 or 'http://[fe80::a9fe:a9fe%%25eth0]'"
    )
    parser.add_argument(
        "--first", type=int, metavar="N", help="only the first N requests of the boot sequence"
    )
    parser.add_argument(
        "--path",
        action="append",
        dest="paths",
        metavar="PATH",
        help="ask this path instead of the boot sequence (repeatable)",
    )
    parser.add_argument(
        "--header",
        action="append",
        type=_header,
        default=[],
        metavar="NAME:VALUE",
        help="an extra request header (repeatable)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="seconds per connect and per read (cloud-init: 10)",
    )
    args = parser.parse_args(argv)
    report = run(
        args.base, paths=args.paths, first=args.first, headers=args.header, timeout=args.timeout
    )
    sys.stdout.write(json.dumps(report) + "\n")
    return 0 if report["error"] is None else 1


if __name__ == "__main__":
    sys.exit(main())
