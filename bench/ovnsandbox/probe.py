"""Small network probes run inside an instance (the host may have no ping or nc).

    python -m bench.ovnsandbox.probe ping IP [COUNT]      # ICMP echo; exit 0 if answered
    python -m bench.ovnsandbox.probe serve PORT           # TCP: echo one line, upper-cased
    python -m bench.ovnsandbox.probe connect IP PORT TEXT # TCP: send TEXT, print the answer
    python -m bench.ovnsandbox.probe get URL [HEADER...]  # HTTP GET ("Name: value" headers):
                                                          # print the status, then the body
    python -m bench.ovnsandbox.probe get6 ADDRESS%IF PATH # the same to an IPv6 link-local
                                                          # address, retried while the
                                                          # addresses are still tentative

Each probe gives up after a few seconds and says why on stderr.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import time
import urllib.error
import urllib.request


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def ping(ip: str, count: int = 3, timeout: float = 2.0) -> int:
    """Send up to C{count} echo requests; 0 as soon as one is answered."""
    ident = os.getpid() & 0xFFFF
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
        s.settimeout(timeout)
        for seq in range(1, count + 1):
            payload = b"metaproxy-sandbox"
            header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
            header = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, seq)
            s.sendto(header + payload, (ip, 0))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    packet, (source, _port) = s.recvfrom(2048)
                except TimeoutError:
                    break
                start = (packet[0] & 0x0F) * 4
                kind, _code, _sum, got_id, got_seq = struct.unpack(
                    "!BBHHH", packet[start : start + 8]
                )
                if source == ip and kind == 0 and got_id == ident and got_seq == seq:
                    print(f"reply from {ip} seq={seq}")
                    return 0
    print(f"no echo reply from {ip} after {count} requests", file=sys.stderr)
    return 1


def serve(port: int, timeout: float = 20.0) -> int:
    with socket.create_server(("0.0.0.0", port)) as server:
        server.settimeout(timeout)
        print("listening", flush=True)
        conn, _peer = server.accept()
        with conn:
            conn.settimeout(timeout)
            line = conn.makefile("rb").readline()
            conn.sendall(line.upper())
    return 0


def connect(ip: str, port: int, text: str, timeout: float = 10.0) -> int:
    with socket.create_connection((ip, port), timeout) as conn:
        conn.sendall(text.encode() + b"\n")
        print(conn.makefile("rb").readline().decode().strip())
    return 0


def get(url: str, headers: list[str], timeout: float = 10.0) -> int:
    request = urllib.request.Request(url)
    for header in headers:
        name, _, value = header.partition(":")
        request.add_header(name.strip(), value.strip())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            print(answer.status)
            sys.stdout.write(answer.read().decode(errors="replace"))
    except urllib.error.HTTPError as e:
        print(e.code)
        sys.stdout.write(e.read().decode(errors="replace"))
    return 0


def get6(host: str, path: str, timeout: float = 15.0) -> int:
    import http.client

    deadline = time.monotonic() + timeout
    while True:
        connection = http.client.HTTPConnection(host, 80, timeout=5)
        try:
            connection.request("GET", path, headers={"Host": "[fe80::a9fe:a9fe]"})
            answer = connection.getresponse()
            print(answer.status)
            sys.stdout.write(answer.read().decode(errors="replace"))
            return 0
        except OSError as e:  # tentative addresses (DAD), neighbour discovery
            if time.monotonic() > deadline:
                print(f"no answer from {host}: {e}", file=sys.stderr)
                return 1
            time.sleep(0.2)
        finally:
            connection.close()


def main(argv: list[str]) -> int:
    command, *args = argv
    if command == "ping":
        return ping(args[0], int(args[1]) if len(args) > 1 else 3)
    if command == "serve":
        return serve(int(args[0]))
    if command == "connect":
        return connect(args[0], int(args[1]), args[2])
    if command == "get":
        return get(args[0], args[1:])
    if command == "get6":
        return get6(args[0], args[1])
    print(f"unknown probe {command!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
