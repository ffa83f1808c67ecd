"""The static table backend: ports and routers read from a JSON file.

It is the embedded default (demos, tests, benchmarks): no Neutron, no network, every
answer is an already-fired Deferred. The file::

    {"routers": {"<router id>": ["<network id>", ...]},
     "ports": [{"id": "p1", "network_id": "n1", "mac_address": "fa:16:3e:00:00:01",
                "fixed_ips": ["10.0.0.5", "fd00::5"], "device_id": "<instance uuid>",
                "project_id": "<project>", "device_owner": "compute:nova"}],
     "instances": {...}}

All three top-level keys are optional; any other key is an error. In a port, C{id}
(default C{port-<index>}), C{device_owner} (default empty) are optional, C{device_id} may
be empty (the port then identifies nobody), and C{fixed_ips} may be an empty list. Any
other key in a port is an error too, so that a typo (C{"device-owner"}) is not silently
ignored. C{instances} is not read here (the fake Nova reads it).

A router's networks are, as upstream queries them (docs/upstream.md, "Port lookup"), the networks of
the ports whose C{device_id} is the router and whose C{device_owner} is one of
L{ROUTER_INTERFACE_OWNERS} (the gateway port is not), in file order; then the networks the
C{routers} map lists for it, as if they were more interface ports. Duplicates are kept.

Lookups match exact text: the caller passes an IP address in C{ipaddress} compressed form
(IPv4-mapped IPv6 already turned into IPv4) and a MAC in lower case with colons, the forms
the table normalises the file's values to. The lists the lookups return are the table's
own (shared, never copied): read them, do not change them.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred, succeed

from metaproxy.resolve.base import ROUTER_INTERFACE_OWNERS, BackendError, Port

__all__ = ["TableError", "PortTable", "parse_table", "load_table", "TableBackend"]

_TOP_LEVEL_KEYS = ("routers", "ports", "instances")
_PORT_KEYS = (
    "id",
    "network_id",
    "mac_address",
    "fixed_ips",
    "device_id",
    "project_id",
    "device_owner",
)
_REQUIRED_PORT_KEYS = ("network_id", "mac_address", "fixed_ips", "device_id", "project_id")
_MAC = re.compile(r"[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}(?:\1[0-9A-Fa-f]{2}){4}\Z")
_INTERFACE_OWNERS = frozenset(ROUTER_INTERFACE_OWNERS)
#: At most this many problems are listed in one error (a broken generator can make
#: thousands; the first ones say what is wrong).
_MAX_PROBLEMS = 20


class TableError(BackendError, ValueError):
    """The table file cannot be used. The message names the file, the entry and why.

    @ivar problems: one line per problem found (at most 20), each naming the file.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@attrs.frozen(eq=False)
class PortTable:
    """A parsed, validated, indexed table. Built by L{parse_table} or L{load_table}.

    @ivar source: the file it came from, for messages.
    @ivar ports: every port, in file order.
    @ivar by_ip: C{(network id, ip)} to the ports on that network with that fixed IP.
    @ivar by_mac: C{(network id, mac)} to the ports on that network with that MAC.
    @ivar routers: router id to its networks (see the module docstring), duplicates kept.
    """

    source: str
    ports: tuple[Port, ...]
    by_ip: Mapping[tuple[str, str], list[Port]]
    by_mac: Mapping[tuple[str, str], list[Port]]
    routers: Mapping[str, tuple[str, ...]]

    def __len__(self) -> int:
        return len(self.ports)

    def router_networks(self, router_id: str) -> tuple[str, ...]:
        """The router's networks; C{()} for a router the table does not know."""
        return self.routers.get(router_id, ())

    def ports_by_ip(self, networks: Sequence[str], ip: str) -> list[Port]:
        """Ports on any of C{networks} with fixed IP C{ip} (compressed form); read-only.

        A network listed twice counts once, as in Neutron's C{network_id} filter.
        """
        return _find(self.by_ip, networks, ip)

    def ports_by_mac(self, networks: Sequence[str], mac: str) -> list[Port]:
        """Ports on any of C{networks} with MAC C{mac} (lower case, colons); read-only."""
        return _find(self.by_mac, networks, mac)


def _find(
    index: Mapping[tuple[str, str], list[Port]], networks: Sequence[str], value: str
) -> list[Port]:
    if len(networks) == 1:
        found = index.get((networks[0], value))
        return found if found is not None else []
    result: list[Port] = []
    for network in dict.fromkeys(networks):  # drop repeats, keep order
        found = index.get((network, value))
        if found is not None:
            result.extend(found)
    return result


def load_table(path: str | os.PathLike[str]) -> PortTable:
    """Read, validate and index the table file at C{path}.

    @raise TableError: the file cannot be read, is not JSON, or has a bad entry.
    """
    source = os.fspath(path)
    try:
        with open(source, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise TableError([f"{source}: cannot read the table: {e.strerror or e}"]) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise TableError([f"{source}: not UTF-8 text (byte {e.start})"]) from None
    try:
        document = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as e:
        raise TableError(
            [f"{source}: line {e.lineno}, column {e.colno}: invalid JSON: {e.msg}"]
        ) from None
    except _DuplicateKey as e:
        raise TableError([f"{source}: key {e.args[0]!r} appears twice in one object"]) from None
    return parse_table(document, source)


class _DuplicateKey(Exception):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return result


def parse_table(document: object, source: str = "<table>") -> PortTable:
    """Validate and index an already decoded table (the JSON document as Python values).

    @param source: names the table in messages (the file name for L{load_table}).
    @raise TableError: listing every bad entry found (at most 20).
    """
    problems: list[str] = []

    def problem(text: str) -> None:
        problems.append(f"{source}: {text}")

    if not isinstance(document, dict):
        raise TableError(
            [
                f"{source}: the table must be a JSON object with keys "
                f"{_quoted(_TOP_LEVEL_KEYS)}, not {_json_type(document)}"
            ]
        )
    for key in document:
        if key not in _TOP_LEVEL_KEYS:
            problem(f"unknown top-level key {key!r} (expected {_quoted(_TOP_LEVEL_KEYS)})")

    ports = _parse_ports(document.get("ports", []), problem)
    extra_routes = _parse_routers(document.get("routers", {}), problem)
    if problems:
        if len(problems) > _MAX_PROBLEMS:
            more = len(problems) - _MAX_PROBLEMS
            problems = problems[:_MAX_PROBLEMS] + [f"{source}: ... and {more} more problems"]
        raise TableError(problems)

    by_ip: dict[tuple[str, str], list[Port]] = {}
    by_mac: dict[tuple[str, str], list[Port]] = {}
    routers: dict[str, list[str]] = {}
    for port in ports:
        for ip in port.fixed_ips:
            by_ip.setdefault((port.network_id, ip), []).append(port)
        by_mac.setdefault((port.network_id, port.mac_address), []).append(port)
        if port.device_id and port.device_owner in _INTERFACE_OWNERS:
            routers.setdefault(port.device_id, []).append(port.network_id)
    for router_id, networks in extra_routes.items():
        routers.setdefault(router_id, []).extend(networks)
    return PortTable(
        source=source,
        ports=tuple(ports),
        by_ip=by_ip,
        by_mac=by_mac,
        routers={router_id: tuple(networks) for router_id, networks in routers.items()},
    )


def _parse_routers(value: object, problem: Callable[[str], None]) -> dict[str, list[str]]:
    if not isinstance(value, dict):
        problem(
            f"routers must be an object mapping router ids to lists of network ids, "
            f"not {_json_type(value)}"
        )
        return {}
    routers: dict[str, list[str]] = {}
    for router_id, networks in value.items():
        where = f"routers[{router_id!r}]"
        if not router_id:
            problem(f"{where}: a router id must not be empty")
            continue
        if not isinstance(networks, list):
            problem(f"{where}: must be a list of network ids, not {_json_type(networks)}")
            continue
        good = []
        for i, network in enumerate(networks):
            if isinstance(network, str) and network:
                good.append(network)
            else:
                problem(f"{where}[{i}]: {_show(network)} is not a network id (a non-empty string)")
        routers[router_id] = good
    return routers


def _parse_ports(value: object, problem: Callable[[str], None]) -> list[Port]:
    if not isinstance(value, list):
        problem(f"ports must be a list of port objects, not {_json_type(value)}")
        return []
    ports: list[Port] = []
    first_index: dict[str, int] = {}
    for index, entry in enumerate(value):
        port = _parse_port(index, entry, problem)
        if port is None:
            continue
        if port.id in first_index:
            problem(
                f"ports[{index}] (id {port.id!r}): the id is already used by "
                f"ports[{first_index[port.id]}]"
            )
            continue
        first_index[port.id] = index
        ports.append(port)
    return ports


def _parse_port(index: int, entry: object, problem: Callable[[str], None]) -> Port | None:
    if not isinstance(entry, dict):
        problem(f"ports[{index}]: must be an object, not {_json_type(entry)}")
        return None
    port_id = entry.get("id", f"port-{index}")
    good_id = isinstance(port_id, str) and bool(port_id)
    where = f"ports[{index}] (id {port_id!r})" if good_id else f"ports[{index}]"
    bad = False

    def fail(text: str) -> None:
        nonlocal bad
        bad = True
        problem(f"{where}: {text}")

    if not good_id:
        fail(f"id {_show(port_id)} is not a non-empty string")
    for key in entry:
        if key not in _PORT_KEYS:
            fail(f"unknown key {key!r} (expected {_quoted(_PORT_KEYS)})")
    for key in _REQUIRED_PORT_KEYS:
        if key not in entry:
            fail(f"missing {key!r}")

    network_id = entry.get("network_id", "")
    if "network_id" in entry and not (isinstance(network_id, str) and network_id):
        fail(f"network_id {_show(network_id)} is not a network id (a non-empty string)")

    mac = entry.get("mac_address", "")
    if "mac_address" in entry:
        if isinstance(mac, str) and _MAC.match(mac):
            mac = mac.lower().replace("-", ":")
        else:
            fail(
                f"mac_address {_show(mac)} is not a MAC address "
                "(six hex pairs separated by ':' or '-')"
            )

    fixed_ips: list[str] = []
    raw_ips = entry.get("fixed_ips", [])
    if not isinstance(raw_ips, list):
        fail(f"fixed_ips must be a list of IP addresses, not {_json_type(raw_ips)}")
    else:
        for i, raw in enumerate(raw_ips):
            ip = _normalise_ip(raw)
            if ip is None:
                fail(f"fixed_ips[{i}] {_show(raw)} is not an IP address")
            elif ip in fixed_ips:
                fail(f"fixed_ips[{i}] {_show(raw)} repeats fixed_ips[{fixed_ips.index(ip)}]")
            else:
                fixed_ips.append(ip)

    device_id = entry.get("device_id", "")
    if not isinstance(device_id, str):
        fail(f'device_id {_show(device_id)} is not a string (use "" for no device)')
    project_id = entry.get("project_id", "")
    if "project_id" in entry and not (isinstance(project_id, str) and project_id):
        fail(f"project_id {_show(project_id)} is not a project id (a non-empty string)")
    device_owner = entry.get("device_owner", "")
    if not isinstance(device_owner, str):
        fail(f"device_owner {_show(device_owner)} is not a string")

    if bad:
        return None
    return Port(
        id=port_id,
        network_id=network_id,
        mac_address=mac,
        fixed_ips=tuple(fixed_ips),
        device_id=device_id,
        project_id=project_id,
        device_owner=device_owner,
    )


def _normalise_ip(value: object) -> str | None:
    """The compressed form of an IP address, or C{None} (scoped IPv6 addresses too)."""
    if not isinstance(value, str):
        return None
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if getattr(address, "scope_id", None):
        return None
    return address.compressed


def _show(value: object) -> str:
    """A JSON value as a message quotes it: strings in quotes, others as JSON."""
    if isinstance(value, str):
        return repr(value)
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _quoted(names: Iterable[str]) -> str:
    return ", ".join(repr(name) for name in names)


class TableBackend:
    """A L{PortBackend} answering from a table file, with L{reload} for SIGHUP.

    Every method returns an already-fired Deferred and never fails.

    @raise TableError: from the constructor, when the file is unusable.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = os.fspath(path)
        self._table = load_table(self._path)
        self.name = f"table {self._path}"

    @property
    def path(self) -> str:
        return self._path

    @property
    def table(self) -> PortTable:
        """The table answers come from now."""
        return self._table

    def reload(self) -> None:
        """Read the file again and answer from it from now on.

        @raise TableError: the file is unusable now; the old table stays in use, so a bad
            edit never empties a running agent.
        """
        self._table = load_table(self._path)

    def describe(self) -> str:
        return f"table {self._path} ({len(self._table.ports)} ports)"

    def router_networks(self, router_id: str) -> Deferred[tuple[str, ...]]:
        return succeed(self.router_networks_now(router_id))

    # The same answers without a Deferred (see metaproxy.resolve.cache, "Answers now").

    def router_networks_now(self, router_id: str) -> tuple[str, ...]:
        return self._table.routers.get(router_id, ())

    def ports_by_ip_now(self, networks: Sequence[str], ip: str) -> list[Port]:
        return _find(self._table.by_ip, networks, ip)

    def ports_by_mac_now(self, networks: Sequence[str], mac: str) -> list[Port]:
        return _find(self._table.by_mac, networks, mac)

    def ports_by_ip(self, networks: Sequence[str], ip: str) -> Deferred[list[Port]]:
        return succeed(self.ports_by_ip_now(networks, ip))

    def ports_by_mac(self, networks: Sequence[str], mac: str) -> Deferred[list[Port]]:
        return succeed(self.ports_by_mac_now(networks, mac))
