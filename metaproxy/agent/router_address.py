"""The metadata address on a router namespace's loopback, over netlink (pyroute2).

In C{[metaproxy] router_namespaces = serve} mode metaproxy answers instances behind a
router in the router's own namespace: it puts C{169.254.169.254/32} on the namespace's
C{lo} and listens on C{169.254.169.254:80} there (docs/routers.md says why this, and not
the L3 agent's iptables redirect). L{ensure_metadata_address} runs on the thread that has
entered the namespace to open the listening socket
(L{metaproxy.http.netns.open_in_namespace}'s C{prepare}), so the netlink socket it opens
is the namespace's own: no helper process, no second C{setns}.

The address is added with C{scope host}: it is never picked as the source address of a
packet the router sends, and, because Neutron's router namespaces set
C{net.ipv4.conf.all.arp_ignore = 1}, never answered in ARP on a C{qr-} port (the kernel
answers only for addresses on the asking port). So it changes nothing for the L3 agent's
ports, HA VIPs or DVR, and is only reached by packets routed to the router, as the L3
agent's own redirect is. It dies with the namespace; a leftover (metaproxy stopped, mode
turned off) is harmless: with the L3 agent's metadata proxy back on, its redirect to 9697
comes first in C{nat PREROUTING}.

pyroute2 is imported on first use (about 0.1 s, and 9 MiB of the agent's RSS as
C{python -m bench.scale routers} measures it), so the agent pays for it only in this
mode. The loopback is always interface 1 in a network namespace (the kernel
creates it first, with a fixed index), so no link dump is needed: about 1 ms a router.
"""

from __future__ import annotations

import errno
import os

from metaproxy.http.netns import NamespaceSocketError

__all__ = [
    "METADATA_V4",
    "LOOPBACK_INDEX",
    "SCOPE_HOST",
    "ensure_metadata_address",
    "namespace_inode",
]

METADATA_V4 = "169.254.169.254"
#: The loopback's interface index in every network namespace (Linux's LOOPBACK_IFINDEX).
LOOPBACK_INDEX = 1
#: RT_SCOPE_HOST: an address of this host alone, never a packet's source towards a link.
SCOPE_HOST = 254


def namespace_inode() -> int:
    """The inode of the calling thread's network namespace: what C{stat} of its
    C{/run/netns/<name>} file shows while that name is bound to it."""
    return os.stat("/proc/thread-self/ns/net").st_ino


def ensure_metadata_address(name: str) -> int:
    """Put C{169.254.169.254/32} (scope host) on C{lo} of the network namespace the
    calling thread is in, unless it is there already; return that namespace's inode
    (L{namespace_inode}). C{name} only names it in messages.

    @raise NamespaceSocketError: the address could not be added; the message says why
        and what to do.
    """
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        with IPRoute() as ipr:
            ipr.addr(
                "add",
                index=LOOPBACK_INDEX,
                address=METADATA_V4,
                prefixlen=32,
                scope=SCOPE_HOST,
            )
    except NetlinkError as e:
        if e.code != errno.EEXIST:  # there already: ours from before a restart, say
            raise NamespaceSocketError(_adding(name, e.code)) from None
    except OSError as e:
        raise NamespaceSocketError(
            f"cannot add {METADATA_V4}/32 to lo in {name}: netlink: {e.strerror or e}"
        ) from None
    return namespace_inode()


def _adding(name: str, code: int) -> str:
    where = f"cannot add {METADATA_V4}/32 to lo in {name}: {os.strerror(code)}"
    if code == errno.EPERM:
        return f"{where} (serving router namespaces needs CAP_NET_ADMIN)"
    return where
