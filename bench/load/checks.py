# -*- test-case-name: tests.bench.load.test_storm -*-
"""The storm's verdict on each request: its kind (L{KINDS}: C{ok} or an error), the
framing flags of an answer taken despite framing that is not HTTP/1.1's, the boot
outcomes, and the check of an answer against the instance it is for (L{check_answer})."""

from __future__ import annotations

import json

from bench.load.cloudinit import acceptable
from bench.load.fleet import FleetInstance
from bench.load.report import BARE_LF_NAME, TRAILING_NAME

__all__ = [
    "OK",
    "REFUSED",
    "BACKLOG_FULL",
    "CONNECT_ERROR",
    "TIMEOUT",
    "CLOSED",
    "BAD_HTTP",
    "STATUS",
    "WRONG_INSTANCE",
    "WRONG_BODY",
    "KINDS",
    "TRANSPORT",
    "REFUSALS",
    "BARE_LF",
    "TRAILING",
    "framing_name",
    "BOOT_CLEAN",
    "BOOT_WRONG",
    "BOOT_FAILED",
    "kind_name",
    "check_answer",
]

# ---- error kinds: one code per request; "status" is spelt with the status, "status 403"

OK = 0
REFUSED = 1
BACKLOG_FULL = 2
CONNECT_ERROR = 3
TIMEOUT = 4
CLOSED = 5
BAD_HTTP = 6
STATUS = 7
WRONG_INSTANCE = 8
WRONG_BODY = 9

#: Code to name. C{status} becomes C{status <code>} in results (L{kind_name}).
KINDS = {
    OK: "ok",
    REFUSED: "connection refused",  # nothing listens (ECONNREFUSED)
    BACKLOG_FULL: "backlog full",  # the listen queue is full (EAGAIN on a Unix connect)
    CONNECT_ERROR: "connect error",  # any other failure to connect (no such socket...)
    TIMEOUT: "timeout",  # no complete answer within request_timeout
    CLOSED: "closed without answer",  # EOF or reset before the first byte of an answer
    BAD_HTTP: "bad http",  # an answer that is not well-formed HTTP/1.x, or cut short
    STATUS: "status",  # a status cloud-init would not accept here
    WRONG_INSTANCE: "wrong instance",  # another instance's uuid, id, address or hostname
    WRONG_BODY: "wrong body",  # user data not byte-exact, 200 for absent user data...
}
#: Kinds after which the boot cannot go on (no answer to give cloud-init).
TRANSPORT = frozenset({REFUSED, BACKLOG_FULL, CONNECT_ERROR, TIMEOUT, CLOSED, BAD_HTTP})
#: The refusals: the agent did not take the connection at all (nothing listens, or its
#: listen queue is full). Errors like the others, and also counted on their own
#: (L{bench.load.report.REFUSAL_KINDS}, C{refused connections} in the report).
REFUSALS = frozenset({REFUSED, BACKLOG_FULL})

#: Per-request framing flags (L{bench.load.answer_parser.Answer.bare_lf} and
#: C{trailing}): the answer was
#: taken, but it was not plain HTTP/1.1 framing. Counted as C{non-CRLF answers}.
BARE_LF = 1
TRAILING = 2


def framing_name(flags: int) -> str:
    """The C{non-CRLF answers} kind of a request's framing flags (non-zero)."""
    return ", ".join(
        name for flag, name in ((BARE_LF, BARE_LF_NAME), (TRAILING, TRAILING_NAME)) if flags & flag
    )


#: Boot outcomes.
BOOT_CLEAN, BOOT_WRONG, BOOT_FAILED = 0, 1, 2


def kind_name(code: int, status: int = 0) -> str:
    if code == STATUS:
        return f"status {status}"
    return KINDS[code]


_OPENSTACK_PREFIX = "/openstack/"


def check_answer(path: str, status: int, body: bytes, instance: FleetInstance) -> int:
    """L{OK} if C{(status, body)} is the right answer to C{path} for C{instance}, else the
    error kind: L{STATUS} (a status L{bench.load.cloudinit.acceptable} refuses, or a 404 for
    user data the instance has), L{WRONG_INSTANCE} (another instance's uuid, EC2 id,
    address, hostname or key), L{WRONG_BODY} (user data not byte-exact, a 200 for absent
    user data, an unreadable C{meta_data.json})."""
    if not acceptable(path, status):
        return STATUS
    if path.startswith(_OPENSTACK_PREFIX) and path.endswith("/user_data"):
        if instance.user_data is None:
            return OK if status == 404 else WRONG_BODY
        if status != 200:  # cloud-init takes the 404, but this instance has user data
            return STATUS
        return OK if body == instance.user_data else WRONG_BODY
    if path.startswith(_OPENSTACK_PREFIX) and path.endswith("/meta_data.json"):
        try:
            document = json.loads(body)
            uuid, hostname = document["uuid"], document["hostname"]
        except (ValueError, KeyError, TypeError):
            return WRONG_BODY
        if uuid != instance.instance_id or hostname != instance.hostname:
            return WRONG_INSTANCE
        return OK
    expected: str | None = None
    if path == "/latest/meta-data/instance-id":
        expected = instance.ec2_instance_id
    elif path == "/latest/meta-data/local-ipv4":
        expected = instance.ip
    elif path in ("/latest/meta-data/hostname", "/latest/meta-data/local-hostname"):
        expected = instance.hostname
    elif path.startswith("/latest/meta-data/public-keys/") and path.endswith("/openssh-key"):
        index = path.split("/")[4]
        keys = instance.public_keys
        if not index.isdigit() or int(index) >= len(keys):
            return WRONG_INSTANCE
        expected = keys[int(index)][1]
    if expected is not None and body != expected.encode("utf-8"):
        return WRONG_INSTANCE
    return OK
