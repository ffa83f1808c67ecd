# -*- test-case-name: tests.unit.test_fakenova,tests.integration.test_fakenova_process -*-
"""A fake Nova metadata API for the demo, the integration tests and the bench.

It checks the proxy headers the way Nova does with C{[neutron] service_metadata_proxy =
True} (reference section 5), serves the tree from L{bench.novatree}, and records every
request it receives (method, request-target, headers exactly as on the wire, body) so
tests can assert what metaproxy forwarded, byte for byte.

Control endpoints (only with the header C{X-Fakenova-Control: 1}; they skip the
signature checks and are not recorded):

  - C{GET /_fakenova/stats}: L{NovaStats.as_json};
  - C{GET /_fakenova/requests}: the recorded requests, bytes as latin-1 strings;
  - C{POST /_fakenova/reset}: forget the counters and the recorded requests;
  - C{GET|POST /_fakenova/config}: read or change C{delay} and C{status_override}
    (POST a JSON object with either key).

Run it with C{python -m bench.fakenova --table ports.json --secret S}; see L{main}.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import collections
import gzip
import hashlib
import hmac
import ipaddress
import json
import posixpath
import re
import sys
from typing import Any, Mapping, MutableMapping, Sequence, Union
from urllib.parse import unquote_to_bytes

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from bench import novatree
from bench.novatree import InstanceRecord

__all__ = [
    "OUTCOMES",
    "CONTROL_HEADER",
    "RecordedRequest",
    "NovaStats",
    "FakeNova",
    "QuietSite",
    "instances_from_table",
    "load_table",
    "make_site",
    "tls_options",
    "main",
]

_log = Logger()

#: How the fake answered a request; L{NovaStats.by_outcome} has every one of these keys.
OUTCOMES: tuple[str, ...] = (
    "ok",  # served from the tree (root listing and password GET/POST included)
    "missing_header",  # 400: X-Instance-ID, X-Instance-ID-Signature or X-Tenant-ID absent
    "multiple_headers",  # 400: X-Instance-ID or X-Tenant-ID more than once
    "bad_signature",  # 403
    "unknown_instance",  # 404: no such instance
    "tenant_mismatch",  # 404: X-Tenant-ID is not the instance's project
    "not_found",  # 404: no such path or version in the tree
    "password_rejected",  # 400/409 from the password handler
    "override",  # status forced by status_override
)

#: The header that marks a request to C{/_fakenova/...} as a control request.
CONTROL_HEADER = b"X-Fakenova-Control"
_CONTROL_PREFIX = b"/_fakenova/"


@attrs.frozen
class RecordedRequest:
    """One request as the fake received it, and how it answered.

    @ivar uri: the request-target exactly as on the wire (path and query, not decoded).
    @ivar headers: C{(name, value)} in wire order, names in their wire case.
    """

    method: bytes
    uri: bytes
    version: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    status: int
    outcome: str

    def header_values(self, name: bytes) -> list[bytes]:
        """All values of header C{name} (case-insensitive), in order."""
        lowered = name.lower()
        return [value for key, value in self.headers if key.lower() == lowered]

    def as_json(self) -> dict[str, Any]:
        """JSON-ready form: bytes become latin-1 strings (a lossless mapping)."""
        return {
            "method": self.method.decode("latin-1"),
            "uri": self.uri.decode("latin-1"),
            "version": self.version.decode("latin-1"),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in self.headers],
            "body": self.body.decode("latin-1"),
            "status": self.status,
            "outcome": self.outcome,
        }


@attrs.define
class NovaStats:
    """Counters of everything the fake answered, and the last requests it received.

    @ivar total: requests answered (control requests excluded).
    @ivar by_status: status code to count.
    @ivar by_outcome: one of L{OUTCOMES} to count.
    @ivar requests: the last C{max_recorded} requests, oldest first.
    """

    max_recorded: int = 1000
    total: int = 0
    by_status: collections.Counter[int] = attrs.field(factory=collections.Counter)
    by_outcome: collections.Counter[str] = attrs.field(factory=collections.Counter)
    requests: collections.deque[RecordedRequest] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.requests = collections.deque(maxlen=self.max_recorded)

    def record(self, request: RecordedRequest) -> None:
        self.total += 1
        self.by_status[request.status] += 1
        self.by_outcome[request.outcome] += 1
        self.requests.append(request)

    def reset(self) -> None:
        self.total = 0
        self.by_status.clear()
        self.by_outcome.clear()
        self.requests.clear()

    def as_json(self) -> dict[str, Any]:
        """C{{"total", "by_status": {"200": n}, "by_outcome": {outcome: n}, "recorded",
        "max_recorded"}}; C{by_outcome} lists every outcome, zeros included."""
        outcomes = {outcome: self.by_outcome.get(outcome, 0) for outcome in OUTCOMES}
        return {
            "total": self.total,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "by_outcome": outcomes,
            "recorded": len(self.requests),
            "max_recorded": self.max_recorded,
        }

    def requests_as_json(self) -> list[dict[str, Any]]:
        return [request.as_json() for request in self.requests]


@attrs.frozen
class _Answer:
    status: int
    content_type: str
    body: bytes
    outcome: str


def _error(status: int, outcome: str, explanation: Union[str, None] = None) -> _Answer:
    return _Answer(status, novatree.TEXT_HTML, novatree.error_page(status, explanation), outcome)


class FakeNova(Resource):
    """The whole fake Nova as one leaf resource.

    @ivar instances: instance id to record (password POSTs replace records).
    @ivar delay: seconds to wait before answering (not control requests).
    @ivar status_override: decoded request path (no query) to a status answered
        instead, before any header check, with webob's page for that status.
    """

    isLeaf = True

    def __init__(
        self,
        instances: Mapping[str, InstanceRecord],
        secret: Union[str, bytes],
        reactor: IReactorTime,
        stats: NovaStats,
        *,
        delay: float = 0.0,
        status_override: Union[MutableMapping[str, int], None] = None,
    ) -> None:
        super().__init__()
        self.instances = dict(instances)
        self._secret = secret.encode("utf-8") if isinstance(secret, str) else secret
        self._reactor = reactor
        self.stats = stats
        self.delay = delay
        self.status_override: MutableMapping[str, int] = (
            status_override if status_override is not None else {}
        )

    def render(self, request: Request) -> Any:
        if request.path.startswith(_CONTROL_PREFIX) and request.getHeader(CONTROL_HEADER) == b"1":
            return self._control(request)
        request.content.seek(0)
        body = request.content.read()
        answer = self._answer(request, body)
        self.stats.record(
            RecordedRequest(
                method=request.method,
                uri=request.uri,
                version=request.clientproto,
                headers=tuple(getattr(request, "raw_headers", ())),
                body=body,
                status=answer.status,
                outcome=answer.outcome,
            )
        )
        if self.delay > 0:
            call = self._reactor.callLater(self.delay, _write, request, answer)

            def gone(_: object) -> None:
                if call.active():
                    call.cancel()

            request.notifyFinish().addErrback(gone)
        else:
            _write(request, answer)
        return NOT_DONE_YET

    def _answer(self, request: Request, body: bytes) -> _Answer:
        path = unquote_to_bytes(request.path).decode("utf-8", "replace")
        override = self.status_override.get(path)
        if override is not None:
            page = novatree.error_page(override) if override >= 400 else b""
            return _Answer(override, novatree.TEXT_HTML, page, "override")
        if posixpath.normpath(path) == "/":
            status, content_type, data = novatree.lookup(_ROOT_RECORD, "/")
            return _Answer(status, content_type, data, "ok")

        headers = request.requestHeaders
        instance_ids = headers.getRawHeaders(b"X-Instance-ID")
        signatures = headers.getRawHeaders(b"X-Instance-ID-Signature")
        tenant_ids = headers.getRawHeaders(b"X-Tenant-ID")
        if instance_ids is None:
            return _error(400, "missing_header", "X-Instance-ID header is missing from request.")
        if signatures is None:
            return _error(
                400, "missing_header", "X-Instance-ID-Signature header is missing from request."
            )
        if tenant_ids is None:
            return _error(400, "missing_header", "X-Tenant-ID header is missing from request.")
        if len(instance_ids) > 1:
            return _error(
                400, "multiple_headers", "Multiple X-Instance-ID headers found within request."
            )
        if len(tenant_ids) > 1:
            return _error(
                400, "multiple_headers", "Multiple X-Tenant-ID headers found within request."
            )

        # A WSGI server joins repeated headers with ", "; so does this for the others.
        instance_id = instance_ids[0].decode("latin-1")
        tenant_id = tenant_ids[0].decode("latin-1")
        signature = b", ".join(signatures)
        forwarded = headers.getRawHeaders(b"X-Forwarded-For")
        address = b", ".join(forwarded).decode("latin-1") if forwarded else None

        expected = hmac.new(self._secret, instance_id.encode("utf-8"), hashlib.sha256)
        if not (signature and hmac.compare_digest(expected.hexdigest().encode("ascii"), signature)):
            if instance_id:
                # Since Nova bug #2150094 the expected signature is not logged.
                _log.warn(
                    "X-Instance-ID-Signature: {signature} does not match the expected "
                    "signature for id: {instance_id}. Request From: {remote_address}",
                    signature=signature.decode("latin-1"),
                    instance_id=instance_id,
                    remote_address=address,
                )
            return _error(403, "bad_signature", "Invalid proxy request signature.")

        record = self.instances.get(instance_id)
        if record is None:
            _log.error(
                "Failed to get metadata for instance id: {instance_id}", instance_id=instance_id
            )
            return _error(404, "unknown_instance")
        if record.project_id != tenant_id:
            _log.warn(
                "Tenant_id {tenant_id} does not match tenant_id of instance {instance_id}.",
                tenant_id=tenant_id,
                instance_id=instance_id,
            )
            return _error(404, "tenant_mismatch")

        if novatree.is_password_path(path):
            return self._password(request, record, body)
        status, content_type, data = novatree.lookup(record, path, address=address)
        return _Answer(status, content_type, data, "ok" if status == 200 else "not_found")

    def _password(self, request: Request, record: InstanceRecord, body: bytes) -> _Answer:
        """Nova's C{handle_password}: GET reads, POST sets once, anything else is a 400."""
        if request.method == b"GET":
            return _Answer(200, novatree.TEXT_HTML, record.password.encode("utf-8"), "ok")
        if request.method != b"POST":
            return _error(400, "password_rejected", "GET and POST only are supported.")
        if record.password:
            return _error(409, "password_rejected")
        length = request.getHeader(b"Content-Length")
        declared = int(length) if length is not None and length.isdigit() else 0
        if declared > novatree.PASSWORD_MAX_SIZE or len(body) > novatree.PASSWORD_MAX_SIZE:
            return _error(400, "password_rejected", "Request is too large.")
        password = body.decode("utf-8", "replace")[: novatree.PASSWORD_MAX_SIZE]
        self.instances[record.instance_id] = attrs.evolve(record, password=password)
        return _Answer(200, novatree.TEXT_HTML, b"", "ok")

    def _control(self, request: Request) -> bytes:
        name = request.path[len(_CONTROL_PREFIX) :]
        method = request.method
        result: Any
        if name == b"stats" and method == b"GET":
            result = self.stats.as_json()
        elif name == b"requests" and method == b"GET":
            result = self.stats.requests_as_json()
        elif name == b"reset" and method == b"POST":
            self.stats.reset()
            result = self.stats.as_json()
        elif name == b"config" and method in (b"GET", b"POST"):
            if method == b"POST":
                try:
                    self._configure(request.content.read())
                except ValueError as e:
                    request.setResponseCode(400)
                    result = {"error": str(e)}
                    return _json(request, result)
            result = {"delay": self.delay, "status_override": dict(self.status_override)}
        else:
            request.setResponseCode(404)
            result = {"error": "no such control endpoint or method"}
        return _json(request, result)

    def _configure(self, raw: bytes) -> None:
        try:
            config = json.loads(raw)
        except ValueError as e:
            raise ValueError(f"not JSON: {e}") from None
        if not isinstance(config, dict) or set(config) - {"delay", "status_override"}:
            raise ValueError('expected {"delay": seconds, "status_override": {path: status}}')
        if "delay" in config:
            delay = config["delay"]
            if not isinstance(delay, (int, float)) or delay < 0:
                raise ValueError("delay must be a non-negative number")
            self.delay = float(delay)
        if "status_override" in config:
            overrides = config["status_override"]
            if not isinstance(overrides, dict) or not all(
                isinstance(v, int) and 100 <= v <= 599 for v in overrides.values()
            ):
                raise ValueError("status_override must map paths to HTTP status codes")
            self.status_override.clear()
            self.status_override.update(overrides)


def _json(request: Request, value: Any) -> bytes:
    body = json.dumps(value).encode("utf-8")
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Content-Length", b"%d" % len(body))
    return body


def _write(request: Request, answer: _Answer) -> None:
    request.setResponseCode(answer.status)
    request.setHeader(b"Content-Type", answer.content_type.encode("ascii"))
    request.setHeader(b"Content-Length", b"%d" % len(answer.body))
    request.write(answer.body)
    request.finish()


# The root listing does not depend on the instance.
_ROOT_RECORD = InstanceRecord(instance_id="", project_id="", hostname="")


class _RecordingRequest(Request):
    """A request that also keeps its header lines as received: name case and order."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.raw_headers: list[tuple[bytes, bytes]] = []


class _RecordingChannel(HTTPChannel):
    def headerReceived(self, line: bytes) -> bool:
        ok = super().headerReceived(line)
        if ok and self.requests:
            raw = getattr(self.requests[-1], "raw_headers", None)
            if raw is not None:
                name, _, value = line.partition(b":")
                raw.append((name, value.strip(b" \t")))
        return ok


class QuietSite(Site):
    """A L{Site} with no access log, speaking plain HTTP/1.1 on a recording channel."""

    def log(self, request: Request) -> None:
        pass

    def protocol(self) -> HTTPChannel:  # type: ignore[override]
        # HTTPFactory.buildProtocol calls self.protocol(); a plain channel (no HTTP/2
        # negotiation wrapper) lets the channel record raw header lines.
        return _RecordingChannel()


def _fixed_ips(port: Mapping[str, Any]) -> list[str]:
    ips = []
    for item in port.get("fixed_ips") or ():
        ips.append(item["ip_address"] if isinstance(item, Mapping) else str(item))
    return ips


def _network_data(ports: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    links, networks = [], []
    for index, port in enumerate(ports):
        port_id = str(port.get("id") or "port-%d" % index)
        link_id = "tap" + port_id[:11]
        links.append(
            {
                "id": link_id,
                "vif_id": port_id,
                "type": "ovs",
                "mtu": 1450,
                "ethernet_mac_address": port.get("mac_address", ""),
            }
        )
        for ip in _fixed_ips(port):
            version = ipaddress.ip_address(ip).version
            networks.append(
                {
                    "id": "network%d" % len(networks),
                    "type": "ipv4_dhcp" if version == 4 else "ipv6_dhcpv6-stateful",
                    "link": link_id,
                    "network_id": port.get("network_id", ""),
                }
            )
    return {"links": links, "networks": networks, "services": []}


_INSTANCE_KEYS = frozenset(
    {
        "hostname",
        "name",
        "project_id",
        "user_data",
        "user_data_base64",
        "user_data_gzip_base64",
        "public_keys",
        "floating_ip",
        "availability_zone",
        "password",
        "meta",
        "vendor_data",
        "instance_type",
        "launch_index",
        "security_groups",
    }
)


def _user_data(instance_id: str, entry: Mapping[str, Any]) -> Union[bytes, None]:
    keys = ("user_data", "user_data_base64", "user_data_gzip_base64")
    given = [k for k in keys if entry.get(k) is not None]
    if len(given) > 1:
        raise ValueError(f"instance {instance_id}: more than one of {', '.join(given)}")
    if not given:
        return None
    key = given[0]
    if key == "user_data":
        return str(entry[key]).encode("utf-8")
    try:
        data = base64.b64decode(entry[key], validate=True)
    except (binascii.Error, TypeError) as e:
        raise ValueError(f"instance {instance_id}: {key} is not base64: {e}") from None
    if key == "user_data_gzip_base64":
        try:
            gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise ValueError(f"instance {instance_id}: {key} is not gzip: {e}") from None
    return data


def instances_from_table(table: Mapping[str, Any]) -> dict[str, InstanceRecord]:
    """The instances of a metaproxy lookup table (the C{ports.json} format).

    Every port with a C{device_id} whose C{device_owner} is not C{network:*} belongs to
    an instance; the project is the first such port's, C{local-ipv4} the first IPv4 on
    the instance's ports. The optional C{instances} section adds what Neutron does not
    know (hostname, user data, keys...); an instance with no entry gets a hostname from
    its id, no user data and no keys. An C{instances} entry with no port needs a
    C{project_id}. Gzipped user data (C{user_data_gzip_base64}) and other binary user
    data (C{user_data_base64}) are served byte for byte.

    @raise ValueError: an inconsistent or misspelt table.
    """
    ports_by_device: dict[str, list[Mapping[str, Any]]] = {}
    for port in table.get("ports") or ():
        device_id = port.get("device_id") or ""
        owner = port.get("device_owner") or ""
        if device_id and not owner.startswith("network:"):
            ports_by_device.setdefault(device_id, []).append(port)
    entries: Mapping[str, Any] = table.get("instances") or {}
    instance_ids = list(ports_by_device) + [i for i in entries if i not in ports_by_device]

    records = {}
    for instance_id in instance_ids:
        entry = entries.get(instance_id) or {}
        unknown = set(entry) - _INSTANCE_KEYS
        if unknown:
            raise ValueError(f"instance {instance_id}: unknown keys {sorted(unknown)}")
        ports = ports_by_device.get(instance_id, [])
        project_id = entry.get("project_id") or (ports[0].get("project_id") if ports else None)
        if not project_id:
            raise ValueError(f"instance {instance_id}: no port and no project_id")
        ipv4 = [
            ip for port in ports for ip in _fixed_ips(port) if ipaddress.ip_address(ip).version == 4
        ]
        records[instance_id] = InstanceRecord(
            instance_id=instance_id,
            project_id=project_id,
            hostname=entry.get("hostname") or "server-" + instance_id,
            local_ipv4=ipv4[0] if ipv4 else "",
            user_data=_user_data(instance_id, entry),
            public_keys=entry.get("public_keys") or {},
            floating_ip=entry.get("floating_ip") or "",
            availability_zone=entry.get("availability_zone") or "nova",
            name=entry.get("name") or "",
            launch_index=int(entry.get("launch_index", 0)),
            instance_type=entry.get("instance_type") or "m1.small",
            security_groups=entry.get("security_groups") or ("default",),
            password=entry.get("password") or "",
            meta=entry.get("meta") or {},
            vendor_data=entry.get("vendor_data") or {},
            network_data=_network_data(ports),
        )
    return records


def load_table(path: str) -> dict[str, Any]:
    """Read a lookup table file (JSON)."""
    with open(path, encoding="utf-8") as f:
        table = json.load(f)
    if not isinstance(table, dict):
        raise ValueError(f"{path}: the table must be a JSON object")
    return table


def make_site(
    table: Mapping[str, Any],
    secret: Union[str, bytes],
    reactor: IReactorTime,
    delay: float = 0.0,
    *,
    status_override: Union[MutableMapping[str, int], None] = None,
    max_recorded: int = 1000,
) -> tuple[QuietSite, NovaStats]:
    """Build the fake Nova for a parsed lookup table.

    @param table: the parsed C{ports.json} (see L{instances_from_table}).
    @param secret: C{metadata_proxy_shared_secret}.
    @param reactor: used for C{delay} and the channels' timeouts.
    @param status_override: kept by reference: changing it later changes the answers.
    @return: the site (its C{resource} is the L{FakeNova}) and its stats.
    """
    stats = NovaStats(max_recorded=max_recorded)
    nova = FakeNova(
        instances_from_table(table),
        secret,
        reactor,
        stats,
        delay=delay,
        status_override=status_override,
    )
    site = QuietSite(nova, requestFactory=_RecordingRequest, reactor=reactor)
    site.noisy = False
    return site, stats


_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def _pem_certificates(data: bytes, path: str) -> list[bytes]:
    blocks = _PEM_CERT.findall(data)
    if not blocks:
        raise ValueError(f"{path}: no PEM certificate")
    return blocks


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def tls_options(cert_path: str, key_path: str, client_ca_path: Union[str, None] = None) -> Any:
    """The server's C{CertificateOptions}; with a client CA, client certificates are
    required and checked against it."""
    from twisted.internet.ssl import Certificate, CertificateOptions, PrivateCertificate

    blocks = _pem_certificates(_read(cert_path), cert_path)
    leaf = PrivateCertificate.loadPEM(blocks[0] + b"\n" + _read(key_path))
    options: dict[str, Any] = {
        "privateKey": leaf.privateKey.original,
        "certificate": leaf.original,
        "extraCertChain": [Certificate.loadPEM(b).original for b in blocks[1:]],
    }
    if client_ca_path is not None:
        options["verify"] = True
        options["caCerts"] = [
            Certificate.loadPEM(b).original
            for b in _pem_certificates(_read(client_ca_path), client_ca_path)
        ]
        options["requireCertificate"] = True
    return CertificateOptions(**options)


def _describe(address: Any, scheme: str) -> str:
    host = getattr(address, "host", None)
    if host is None:
        return f"unix:{getattr(address, 'name', address)}"
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{address.port}"


def _parse_args(argv: Union[Sequence[str], None]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fakenova", description="A fake Nova metadata API."
    )
    parser.add_argument("--table", required=True, help="lookup table (ports.json format)")
    secret = parser.add_mutually_exclusive_group(required=True)
    secret.add_argument("--secret", help="metadata_proxy_shared_secret")
    secret.add_argument(
        "--secret-file", help="file holding the secret (one trailing newline ignored)"
    )
    parser.add_argument(
        "--listen",
        default="tcp:8775:interface=127.0.0.1",
        help="server endpoint string (default %(default)s; tcp:0 picks a free port)",
    )
    parser.add_argument("--tls-cert", help="serve TLS with this certificate (PEM, chain allowed)")
    parser.add_argument("--tls-key", help="the certificate's private key (PEM)")
    parser.add_argument("--tls-client-ca", help="require client certificates issued by this CA")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument(
        "--max-recorded", type=int, default=1000, help="requests kept for /_fakenova/requests"
    )
    parser.add_argument(
        "--log-level",
        default="warn",
        choices=["debug", "info", "warn", "error", "critical"],
        help="log to stderr from this level (default %(default)s)",
    )
    args = parser.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    if args.tls_client_ca is not None and args.tls_cert is None:
        parser.error("--tls-client-ca needs --tls-cert and --tls-key")
    if args.delay < 0:
        parser.error("--delay must not be negative")
    return args


def _read_secret(args: argparse.Namespace) -> str:
    if args.secret is not None:
        return str(args.secret)
    with open(args.secret_file, encoding="utf-8") as f:
        value = f.read()
    return value[:-1] if value.endswith("\n") else value


async def _serve(reactor: Any, args: argparse.Namespace) -> None:
    from twisted.internet.endpoints import serverFromString
    from twisted.protocols.tls import TLSMemoryBIOFactory

    site, _ = make_site(
        load_table(args.table),
        _read_secret(args),
        reactor,
        args.delay,
        max_recorded=args.max_recorded,
    )
    factory: Any = site
    scheme = "http"
    if args.tls_cert is not None:
        factory = TLSMemoryBIOFactory(
            tls_options(args.tls_cert, args.tls_key, args.tls_client_ca), False, site
        )
        scheme = "https"
    port = await serverFromString(reactor, args.listen).listen(factory)
    print(f"fakenova listening on {_describe(port.getHost(), scheme)}", flush=True)
    # Serve until the reactor stops (SIGTERM, SIGINT): react then exits with 0.
    await Deferred()


def main(argv: Union[Sequence[str], None] = None) -> None:
    """C{python -m bench.fakenova --table PATH (--secret S | --secret-file PATH)
    [--listen tcp:8775:interface=127.0.0.1] [--tls-cert PEM --tls-key PEM
    [--tls-client-ca PEM]] [--delay SECONDS] [--max-recorded N] [--log-level warn]}.

    Prints C{fakenova listening on <url>} once listening, serves until SIGTERM.
    """
    from twisted.internet.task import react  # imports the global reactor
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    args = _parse_args(argv)
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(args.log_level))
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stderr), [predicate])],
        redirectStandardIO=False,
    )
    react(_serve, (args,))


if __name__ == "__main__":
    main()
