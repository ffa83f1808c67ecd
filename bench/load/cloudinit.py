"""cloud-init's first-boot metadata requests (docs/upstream.md, "cloud-init's requests"), sans-IO.

    sequence = boot_sequence()
    path = next(sequence)
    while True:
        status, body = fetch(path)          # any transport: Unix socket, haproxy, HTTP
        try:
            path = sequence.send((status, body))
        except StopIteration as done:
            tree = done.value               # what the instance learnt
            break

The sequence: two C{/openstack} probes, the five OpenStack files of the newest version
cloud-init knows (C{2018-08-27}), then the EC2 crawl of C{/latest/meta-data/} that follows
the listings it gets back, as cloud-init's C{MetadataMaterializer} does: each C{name/}
child listing depth first, then the leaves; an C{i=name} entry under public-keys is read
at C{i/openssh-key}. About 28 requests for an instance with a keypair.

A status the real cloud-init would not accept ends the sequence with L{BootFailed}.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

__all__ = [
    "OPENSTACK_VERSION",
    "OPENSTACK_FILES",
    "BootFailed",
    "boot_sequence",
    "ec2_crawl",
    "acceptable",
]

OPENSTACK_VERSION = "2018-08-27"
OPENSTACK_FILES = (
    "meta_data.json",
    "user_data",
    "vendor_data.json",
    "vendor_data2.json",
    "network_data.json",
)
_OPTIONAL = {f"/openstack/{OPENSTACK_VERSION}/user_data"}

Answer = tuple[int, bytes]


class BootFailed(Exception):
    """cloud-init would give up (or retry) here: C{path} answered C{status}."""

    def __init__(self, path: str, status: int) -> None:
        super().__init__(f"{path} answered {status}")
        self.path = path
        self.status = status


def acceptable(path: str, status: int) -> bool:
    """Whether cloud-init takes C{status} for C{path} as a good answer (404 is fine for
    the optional user data)."""
    return status == 200 or (status == 404 and path in _OPTIONAL)


def boot_sequence(version: str = OPENSTACK_VERSION) -> Generator[str, Answer, dict[str, Any]]:
    """Yield each path cloud-init asks; send back C{(status, body)}; returns the tree."""
    learnt: dict[str, Any] = {}
    yield from _ask("/openstack")  # DataSourceOpenStack's probe
    yield from _ask("/openstack")  # MetadataReader: the versions
    for name in OPENSTACK_FILES:
        path = f"/openstack/{version}/{name}"
        status, body = yield path
        if not acceptable(path, status):
            raise BootFailed(path, status)
        learnt[name] = body if status == 200 else None
    learnt["ec2"] = yield from ec2_crawl()
    return learnt


def _ask(path: str) -> Generator[str, Answer, bytes]:
    status, body = yield path
    if not acceptable(path, status):
        raise BootFailed(path, status)
    return body


def ec2_crawl(url: str = "/latest/meta-data/") -> Generator[str, Answer, dict[str, Any]]:
    """The EC2 part alone: the listing at C{url} and everything it leads to."""
    blob = yield from _ask(url)
    leaves: dict[str, str] = {}
    children: list[str] = []
    for field in blob.decode("utf-8", "replace").splitlines():
        field = field.strip()
        name = field.rstrip("/")
        if not field or not name:
            continue
        if field.endswith("/"):
            if name not in children:
                children.append(name)
            continue
        resource = name
        ident, sep, rest = field.partition("=")
        if sep and ident.isdigit():
            resource, name = f"{int(ident)}/openssh-key", rest
        leaves[name] = resource
    tree: dict[str, Any] = {}
    for child in children:
        tree[child] = yield from ec2_crawl(url + child + "/")
    for name, resource in leaves.items():
        body = yield from _ask(url + resource)
        tree.setdefault(name, body.decode("utf-8", "replace"))
    return tree
