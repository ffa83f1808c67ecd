# -*- test-case-name: tests.bench.fakes.test_fakenova -*-
"""What the Nova metadata API serves for one instance: a pure model of Nova's path rules.

Given an L{InstanceRecord}, L{lookup} answers a request path the way
C{nova/api/metadata/base.py} (C{InstanceMetadata.lookup}) and C{handler.py} do
(docs/upstream.md, "Nova's checks and answers"): the EC2 tree under C{/<version>/}
(C{/ec2} is prepended to any path that does not start with C{/openstack} or C{/ec2}), the
OpenStack tree under C{/openstack/<version>/}, C{posixpath.normpath} on the path (so
trailing slashes do not matter), listings rendered like Nova's C{ec2_md_print} (sorted
keys, C{key/} for sub-trees, C{0=<keyname>} for public keys), and webob-style HTML error
pages.

No I/O, no clock and no randomness: the same record and path always give the same bytes
(Nova's C{random_seed} is derived from the instance id), so forwarding tests can compare
bodies byte for byte.

Deviations from Nova, all on paths no client uses: a path that goes below a leaf value
(C{/latest/meta-data/hostname/x}, C{/latest/meta-data/security-groups/default}) is a 404
here, where Nova raises C{TypeError} (a 500); future-dated OpenStack versions are not
hidden (none are future-dated since 2025-04-04); C{/openstack/content/} has no entries.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import posixpath
import zlib
from collections.abc import Mapping
from typing import Any

import attrs

__all__ = [
    "EC2_VERSIONS",
    "OPENSTACK_VERSIONS",
    "TEXT_PLAIN",
    "APPLICATION_JSON",
    "TEXT_HTML",
    "PASSWORD_MAX_SIZE",
    "InstanceRecord",
    "lookup",
    "is_password_path",
    "error_page",
]

#: EC2 metadata versions, oldest first; C{latest} means the last one.
EC2_VERSIONS: tuple[str, ...] = (
    "1.0",
    "2007-01-19",
    "2007-03-01",
    "2007-08-29",
    "2007-10-10",
    "2007-12-15",
    "2008-02-01",
    "2008-09-01",
    "2009-04-04",
)

_GRIZZLY = "2013-04-04"
_HAVANA = "2013-10-17"
_LIBERTY = "2015-10-15"
_NEWTON_ONE = "2016-06-30"
_NEWTON_TWO = "2016-10-06"
_VICTORIA = "2020-10-14"

#: OpenStack metadata versions, oldest first; C{latest} means the last one.
OPENSTACK_VERSIONS: tuple[str, ...] = (
    "2012-08-10",
    _GRIZZLY,
    _HAVANA,
    _LIBERTY,
    _NEWTON_ONE,
    _NEWTON_TWO,
    "2017-02-22",
    "2018-08-27",
    _VICTORIA,
    "2025-04-04",
)

#: Nova sets C{text/plain}; webob appends the charset to textual types.
TEXT_PLAIN = "text/plain; charset=UTF-8"
#: webob appends no charset to C{application/json}.
APPLICATION_JSON = "application/json"
#: webob's default content type: error pages and the password handler's responses.
TEXT_HTML = "text/html; charset=UTF-8"

#: Nova's password limit: 4 chunks of 255 (C{nova/api/metadata/password.py}).
PASSWORD_MAX_SIZE = 4 * 255

_PASSWORD = "password"


def _mapping_field() -> Any:
    return attrs.field(factory=dict, converter=dict)


@attrs.frozen
class InstanceRecord:
    """One instance as the fake Nova knows it.

    @ivar instance_id: the instance UUID (the C{X-Instance-ID} the proxy sends).
    @ivar project_id: the owning project (must equal C{X-Tenant-ID}).
    @ivar hostname: served as is (Nova would append C{dhcp_domain}).
    @ivar local_ipv4: the first fixed IPv4; empty means Nova's fallback to the
        C{X-Forwarded-For} address.
    @ivar user_data: raw bytes, served byte for byte; L{None} means no user data (404).
    @ivar public_keys: key name to OpenSSH public key, in order; may be empty.
    @ivar floating_ip: C{public-ipv4}; empty gives an empty 200.
    @ivar availability_zone: C{placement/availability-zone} and C{availability_zone}.
    @ivar name: the display name (C{name} in C{meta_data.json}); defaults to the hostname.
    @ivar password: the stored instance password (C{/openstack/<v>/password}).
    @ivar meta: the instance's user metadata (C{meta} in C{meta_data.json}).
    @ivar vendor_data: the StaticJSON vendor data (C{vendor_data.json}, and C{static} in
        C{vendor_data2.json}).
    @ivar network_data: the C{network_data.json} document.
    """

    instance_id: str
    project_id: str
    hostname: str
    local_ipv4: str = ""
    user_data: bytes | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(bytes))
    )
    public_keys: Mapping[str, str] = _mapping_field()
    floating_ip: str = ""
    availability_zone: str = "nova"
    name: str = ""
    launch_index: int = 0
    instance_type: str = "m1.small"
    security_groups: tuple[str, ...] = attrs.field(default=("default",), converter=tuple)
    ami_id: str = "ami-00000001"
    password: str = ""
    meta: Mapping[str, str] = _mapping_field()
    vendor_data: Mapping[str, Any] = _mapping_field()
    network_data: Mapping[str, Any] = _mapping_field()

    @property
    def ec2_instance_id(self) -> str:
        """An EC2-style id (C{i-xxxxxxxx}), derived from the UUID as Nova derives it from
        the database id."""
        return "i-%08x" % (zlib.crc32(self.instance_id.encode("utf-8")) & 0xFFFFFFFF)

    @property
    def reservation_id(self) -> str:
        """An EC2-style reservation id (C{r-xxxxxxxx}), derived from the UUID."""
        return "r-" + hashlib.sha256(b"r:" + self.instance_id.encode("utf-8")).hexdigest()[:8]

    @property
    def display_name(self) -> str:
        return self.name or self.hostname


_WEBOB_EXPLANATIONS = {
    400: "The server could not comply with the request since it is either malformed "
    "or otherwise incorrect.",
    403: "Access was denied to this resource.",
    404: "The resource could not be found.",
    405: "The method is not allowed for this resource.",
    409: "There was a conflict when trying to complete your request.",
    500: "The server has either erred or is incapable of performing the requested operation.",
    502: "Bad gateway.",
    503: "The server is currently unavailable. Please try again at a later time.",
    504: "The gateway has timed out.",
}

_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    413: "Request Entity Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def error_page(status: int, explanation: str | None = None) -> bytes:
    """The HTML body webob renders for an C{HTTPException} (Accept: */*).

    @param explanation: the explanation Nova passes; webob's default for the status if
        L{None}.
    """
    title = "%d %s" % (status, _REASONS.get(status, "Error"))
    if explanation is None:
        explanation = _WEBOB_EXPLANATIONS.get(status, "")
    body = "%s<br /><br />\n\n\n" % (html.escape(explanation, quote=True),)
    page = (
        "<html>\n <head>\n  <title>%s</title>\n </head>\n <body>\n  <h1>%s</h1>\n"
        "  %s\n </body>\n</html>" % (title, title, body)
    )
    return page.encode("utf-8")


class _NotFound(Exception):
    """The path names nothing (Nova's C{InvalidMetadataPath})."""


@attrs.frozen
class _Named:
    """A sub-tree that Nova's listing shows as its C{_name} (the public-keys C{0=name})."""

    name: str
    children: Mapping[str, Any]


def _tokens(path: str) -> list[str]:
    """Nova's path normalisation: leading slash, normpath, the implicit C{/ec2} prefix."""
    if path == "" or path[0] != "/":
        path = posixpath.normpath("/" + path)
    else:
        path = posixpath.normpath(path)
    tokens = path.split("/")[1:]
    if tokens[0] not in ("ec2", "openstack"):
        if tokens[0] == "":
            tokens = ["ec2"]
        else:
            tokens = ["ec2"] + tokens
    return tokens


def _at_least(required: str, requested: str, versions: tuple[str, ...]) -> bool:
    return versions.index(requested) >= versions.index(required)


def _ec2_version(version: str) -> str:
    if version == "latest":
        return EC2_VERSIONS[-1]
    if version not in EC2_VERSIONS:
        raise _NotFound(version)
    return version


def _openstack_version(version: str) -> str:
    if version == "latest":
        return OPENSTACK_VERSIONS[-1]
    if version not in OPENSTACK_VERSIONS:
        raise _NotFound(version)
    return version


def _ec2_tree(record: InstanceRecord, version: str, address: str | None) -> dict[str, Any]:
    def since(required: str) -> bool:
        return _at_least(required, version, EC2_VERSIONS)

    meta_data: dict[str, Any] = {
        "ami-id": record.ami_id,
        "ami-launch-index": record.launch_index,
        "ami-manifest-path": "FIXME",
        "instance-id": record.ec2_instance_id,
        "hostname": record.hostname,
        "local-ipv4": record.local_ipv4 or address or "",
        "reservation-id": record.reservation_id,
        "security-groups": list(record.security_groups),
    }
    if record.public_keys:
        meta_data["public-keys"] = {
            str(index): _Named("%d=%s" % (index, name), {"openssh-key": key})
            for index, (name, key) in enumerate(record.public_keys.items())
        }
    if since("2007-01-19"):
        meta_data["local-hostname"] = record.hostname
        meta_data["public-hostname"] = record.hostname
        meta_data["public-ipv4"] = record.floating_ip
    if since("2007-08-29"):
        meta_data["instance-type"] = record.instance_type
    if since("2007-12-15"):
        meta_data["block-device-mapping"] = {"ami": "vda", "root": "/dev/vda"}
    if since("2008-02-01"):
        meta_data["placement"] = {"availability-zone": record.availability_zone}
    if since("2008-09-01"):
        meta_data["instance-action"] = "none"
    data: dict[str, Any] = {"meta-data": meta_data}
    if record.user_data is not None:
        data["user-data"] = record.user_data
    return data


def _find_in_tree(data: Any, tokens: list[str]) -> Any:
    for index, token in enumerate(tokens):
        if isinstance(data, _Named):
            data = data.children
        if isinstance(data, dict):
            if token not in data:
                raise _NotFound("/".join(tokens[:index]))
            data = data[token]
        else:
            # Below a leaf (or into a list): Nova raises KeyError or TypeError here.
            raise _NotFound("/".join(tokens[:index]))
    return data


def _md_print(data: Any) -> bytes:
    """Nova's C{ec2_md_print}: listings for dicts and lists, leaves as they are."""
    if isinstance(data, _Named):
        data = data.children
    if isinstance(data, dict):
        lines = []
        for key in sorted(data):
            value = data[key]
            if isinstance(value, _Named):
                lines.append(value.name)
            elif isinstance(value, dict):
                lines.append(key + "/")
            else:
                lines.append(key)
        return "\n".join(lines).encode("utf-8")
    if isinstance(data, list):
        return "\n".join(data).encode("utf-8")
    if isinstance(data, bytes):
        return data
    return str(data).encode("utf-8")


def _dump(value: Any) -> bytes:
    """Nova's C{jsonutils.dump_as_bytes}: C{json.dumps} defaults, UTF-8."""
    return json.dumps(value).encode("utf-8")


def _random_seed(record: InstanceRecord) -> str:
    """512 bytes, base64: random in Nova, derived from the instance id here."""
    seed = hashlib.shake_256(b"random_seed:" + record.instance_id.encode("utf-8"))
    return base64.b64encode(seed.digest(512)).decode("ascii")


def _meta_data_json(record: InstanceRecord, version: str) -> bytes:
    def since(required: str) -> bool:
        return _at_least(required, version, OPENSTACK_VERSIONS)

    metadata: dict[str, Any] = {"uuid": record.instance_id}
    if record.meta:
        metadata["meta"] = dict(record.meta)
    if record.public_keys:
        metadata["public_keys"] = dict(record.public_keys)
        metadata["keys"] = [
            {"name": name, "type": "ssh", "data": key} for name, key in record.public_keys.items()
        ]
    metadata["hostname"] = record.hostname
    metadata["name"] = record.display_name
    metadata["launch_index"] = record.launch_index
    metadata["availability_zone"] = record.availability_zone
    if since(_GRIZZLY):
        metadata["random_seed"] = _random_seed(record)
    if since(_LIBERTY):
        metadata["project_id"] = record.project_id
    if since(_NEWTON_ONE):
        metadata["devices"] = []
    if since(_VICTORIA):
        metadata["dedicated_cpus"] = []
    return _dump(metadata)


def _openstack_item(record: InstanceRecord, tokens: list[str]) -> tuple[Any, str]:
    if tokens[0] == "content":
        # Injected files (/openstack/content/<id>): this fake has none.
        raise _NotFound("content")
    version = _openstack_version(tokens[0])

    def since(required: str) -> bool:
        return _at_least(required, version, OPENSTACK_VERSIONS)

    if len(tokens) == 1:
        listing = ["meta_data.json"]
        if record.user_data is not None:
            listing.append("user_data")
        if since(_GRIZZLY):
            listing.append(_PASSWORD)
        if since(_HAVANA):
            listing.append("vendor_data.json")
        if since(_LIBERTY):
            listing.append("network_data.json")
        if since(_NEWTON_TWO):
            listing.append("vendor_data2.json")
        return listing, TEXT_PLAIN
    name = "/".join(tokens[1:])
    if name == "meta_data.json":
        return _meta_data_json(record, version), APPLICATION_JSON
    if name == "user_data":
        if record.user_data is None:
            raise _NotFound(name)
        return record.user_data, TEXT_PLAIN
    if name == _PASSWORD and since(_GRIZZLY):
        return record.password.encode("utf-8"), TEXT_HTML
    if name == "vendor_data.json" and since(_HAVANA):
        return _dump(dict(record.vendor_data)), APPLICATION_JSON
    if name == "vendor_data2.json" and since(_NEWTON_TWO):
        return _dump({"static": dict(record.vendor_data)}), APPLICATION_JSON
    if name == "network_data.json":
        # No mimetype is set for it in Nova: the default text/plain.
        return _dump(dict(record.network_data)), TEXT_PLAIN
    raise _NotFound(name)


def _resolve(record: InstanceRecord, path: str, address: str | None) -> tuple[Any, str]:
    tokens = _tokens(path)
    if len(tokens) == 1:
        if tokens[0] == "openstack":
            return list(OPENSTACK_VERSIONS) + ["latest"], TEXT_PLAIN
        return list(EC2_VERSIONS) + ["latest"], TEXT_PLAIN
    if tokens[0] == "openstack":
        return _openstack_item(record, tokens[1:])
    version = _ec2_version(tokens[1])
    return _find_in_tree(_ec2_tree(record, version, address), tokens[2:]), TEXT_PLAIN


def lookup(
    record: InstanceRecord, path: str, *, address: str | None = None
) -> tuple[int, str, bytes]:
    """Answer a GET for C{path} the way Nova does once the proxy headers have passed.

    @param path: the request path, percent-decoded, without the query (Nova's
        C{path_info}).
    @param address: the C{X-Forwarded-For} value: Nova's C{local-ipv4} fallback when the
        instance has no fixed IPv4.
    @return: C{(status, content_type, body)}; 404 with webob's HTML page for a path or
        version Nova does not know. The password path answers as a GET.
    """
    try:
        data, content_type = _resolve(record, path, address)
    except _NotFound:
        return 404, TEXT_HTML, error_page(404)
    return 200, content_type, _md_print(data)


def is_password_path(path: str) -> bool:
    """Whether Nova routes C{path} to its password handler (which looks at the method).

    That is C{/openstack/<version>/password} for a known version from 2013-04-04 on.
    """
    tokens = _tokens(path)
    if len(tokens) != 3 or tokens[0] != "openstack" or tokens[2] != _PASSWORD:
        return False
    try:
        version = _openstack_version(tokens[1])
    except _NotFound:
        return False
    return _at_least(_GRIZZLY, version, OPENSTACK_VERSIONS)
