# -*- test-case-name: tests.bench.fakes.test_fakenova -*-
"""Nova's answer to one metadata request, as Nova gives it behind the metadata proxy.

L{NovaAnswers.answer}: the root listing needs no header; otherwise the proxy headers
(C{X-Instance-ID}, C{X-Instance-ID-Signature}, C{X-Tenant-ID}: each present, the ids
once), the signature (HMAC-SHA256 of the instance id with the shared secret), the
instance and its project, then the tree (L{bench.fakes.novatree}) or the password
handler. Each answer says how it came about (an outcome of
L{bench.fakes.nova.stats.OUTCOMES}). A bad signature, an unknown instance and a project
mismatch are logged as Nova logs them.
"""

from __future__ import annotations

import hashlib
import hmac
import posixpath
from typing import Any

import attrs
from twisted.logger import Logger
from twisted.web.server import Request

from bench.fakes import novatree
from bench.fakes.novatree import InstanceRecord

__all__ = ["Answer", "error", "NovaAnswers"]

# The fake Nova's log lines keep the name they have always had.
_log = Logger(namespace="bench.fakenova")


@attrs.frozen
class Answer:
    status: int
    content_type: str
    body: bytes
    outcome: str


def error(status: int, outcome: str, explanation: str | None = None) -> Answer:
    """An error answer with webob's page for C{status}."""
    return Answer(status, novatree.TEXT_HTML, novatree.error_page(status, explanation), outcome)


_MEMO_LIMIT = 4096


def _remember(memo: dict[Any, Any], key: Any, value: Any) -> Any:
    """Store C{value} in C{memo}, which is emptied when it reaches L{_MEMO_LIMIT}."""
    if len(memo) >= _MEMO_LIMIT:
        memo.clear()
    memo[key] = value
    return value


# The root listing does not depend on the instance.
_ROOT_RECORD = InstanceRecord(instance_id="", project_id="", hostname="")


class NovaAnswers:
    """Nova's answers for a set of instances, signed with one shared secret.

    @ivar instances: instance id to record; a password POST replaces the record (with
        several processes, in the process that answered only).
    """

    def __init__(self, instances: dict[str, InstanceRecord], secret: bytes) -> None:
        self.instances = instances
        self._secret = secret
        # Memos for the hot path (bounded by _remember).
        self._signatures: dict[str, bytes] = {}
        self._password_paths: dict[str, bool] = {}
        self._lookups: dict[tuple[int, str, str | None], tuple[InstanceRecord, Answer]] = {}

    def answer(self, request: Request, path: str, body: bytes) -> Answer:
        """The answer to C{request}, whose path decodes to C{path}, with its C{body}."""
        if posixpath.normpath(path) == "/":
            status, content_type, data = novatree.lookup(_ROOT_RECORD, "/")
            return Answer(status, content_type, data, "ok")

        headers = request.requestHeaders
        instance_ids = headers.getRawHeaders(b"X-Instance-ID")
        signatures = headers.getRawHeaders(b"X-Instance-ID-Signature")
        tenant_ids = headers.getRawHeaders(b"X-Tenant-ID")
        if instance_ids is None:
            return error(400, "missing_header", "X-Instance-ID header is missing from request.")
        if signatures is None:
            return error(
                400, "missing_header", "X-Instance-ID-Signature header is missing from request."
            )
        if tenant_ids is None:
            return error(400, "missing_header", "X-Tenant-ID header is missing from request.")
        if len(instance_ids) > 1:
            return error(
                400, "multiple_headers", "Multiple X-Instance-ID headers found within request."
            )
        if len(tenant_ids) > 1:
            return error(
                400, "multiple_headers", "Multiple X-Tenant-ID headers found within request."
            )

        # A WSGI server joins repeated headers with ", "; so does this for the others.
        instance_id = instance_ids[0].decode("latin-1")
        tenant_id = tenant_ids[0].decode("latin-1")
        signature = b", ".join(signatures)
        forwarded = headers.getRawHeaders(b"X-Forwarded-For")
        address = b", ".join(forwarded).decode("latin-1") if forwarded else None

        expected = self._signatures.get(instance_id)
        if expected is None:
            digest = hmac.digest(self._secret, instance_id.encode("utf-8"), hashlib.sha256)
            expected = _remember(self._signatures, instance_id, digest.hex().encode("ascii"))
        if not (signature and hmac.compare_digest(expected, signature)):
            if instance_id:
                # Since Nova bug #2150094 the expected signature is not logged.
                _log.warn(
                    "X-Instance-ID-Signature: {signature} does not match the expected "
                    "signature for id: {instance_id}. Request From: {remote_address}",
                    signature=signature.decode("latin-1"),
                    instance_id=instance_id,
                    remote_address=address,
                )
            return error(403, "bad_signature", "Invalid proxy request signature.")

        record = self.instances.get(instance_id)
        if record is None:
            _log.error(
                "Failed to get metadata for instance id: {instance_id}", instance_id=instance_id
            )
            return error(404, "unknown_instance")
        if record.project_id != tenant_id:
            _log.warn(
                "Tenant_id {tenant_id} does not match tenant_id of instance {instance_id}.",
                tenant_id=tenant_id,
                instance_id=instance_id,
            )
            return error(404, "tenant_mismatch")

        is_password = self._password_paths.get(path)
        if is_password is None:
            is_password = _remember(self._password_paths, path, novatree.is_password_path(path))
        if is_password:
            return self._password(request, record, body)
        # The tree is a pure function of the record, path and address (novatree): the
        # entry keeps the record, so a replaced record never matches by a reused id.
        key = (id(record), path, address)
        known = self._lookups.get(key)
        if known is not None and known[0] is record:
            return known[1]
        status, content_type, data = novatree.lookup(record, path, address=address)
        answer = Answer(status, content_type, data, "ok" if status == 200 else "not_found")
        _remember(self._lookups, key, (record, answer))
        return answer

    def _password(self, request: Request, record: InstanceRecord, body: bytes) -> Answer:
        """Nova's C{handle_password}: GET reads, POST sets once, anything else is a 400."""
        if request.method == b"GET":
            return Answer(200, novatree.TEXT_HTML, record.password.encode("utf-8"), "ok")
        if request.method != b"POST":
            return error(400, "password_rejected", "GET and POST only are supported.")
        if record.password:
            return error(409, "password_rejected")
        length = request.getHeader(b"Content-Length")
        declared = int(length) if length is not None and length.isdigit() else 0
        if declared > novatree.PASSWORD_MAX_SIZE or len(body) > novatree.PASSWORD_MAX_SIZE:
            return error(400, "password_rejected", "Request is too large.")
        password = body.decode("utf-8", "replace")[: novatree.PASSWORD_MAX_SIZE]
        self.instances[record.instance_id] = attrs.evolve(record, password=password)
        return Answer(200, novatree.TEXT_HTML, b"", "ok")
