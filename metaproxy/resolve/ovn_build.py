"""Building the OVN backend from L{Settings} (C{[ovn]}, the OVN metadata agent's names)."""

from __future__ import annotations

from typing import Any

from metaproxy.config import Settings
from metaproxy.ovsdb.monitor import OvsdbMonitor
from metaproxy.ovsdb.remote import Remote, RemoteError, TlsFiles, load_tls_options, parse_remotes
from metaproxy.resolve.base import BackendError
from metaproxy.resolve.ovn import OvnBackend
from metaproxy.resolve.ovn_local import ChassisName

__all__ = ["build_ovn_backend", "probe_seconds"]


def probe_seconds(probe_interval_ms: int) -> float:
    """C{ovsdb_probe_interval} in seconds: 0 disables, as OVS does; below 1 s counts as 1 s."""
    if probe_interval_ms <= 0:
        return 0.0
    return max(probe_interval_ms, 1000) / 1000.0


def southbound(settings: Settings) -> tuple[list[Remote], Any]:
    """The Southbound's remotes and TLS options (C{None} without C{ssl:}) from C{[ovn]},
    for the lookups and for the chassis mode alike.

    @raise BackendError: the connection string or the TLS files cannot be used.
    """
    try:
        remotes = parse_remotes(settings.ovn_sb_connection)
    except RemoteError as e:
        raise BackendError(
            f"[ovn] ovn_sb_connection: {e}. Fix: write tcp:IP:PORT, ssl:IP:PORT or unix:PATH."
        ) from None
    tls = None
    if any(remote.kind == "ssl" for remote in remotes):
        files = TlsFiles(
            settings.ovn_sb_private_key, settings.ovn_sb_certificate, settings.ovn_sb_ca_cert
        )
        try:
            tls = load_tls_options(files)
        except RemoteError as e:
            raise BackendError(
                f"[ovn] {e}. Fix: point ovn_sb_private_key, "
                "ovn_sb_certificate and ovn_sb_ca_cert at the PEM files "
                "ovn-controller uses on this node."
            ) from None
    return remotes, tls


def build_ovn_backend(reactor: Any, settings: Settings) -> OvnBackend:
    """The lookups' backend: in the OVN chassis mode (C{ovn_chassis}) the chassis-local
    replica, this node's chassis name read from the local Open_vSwitch database
    (C{[ovs] ovsdb_connection}); otherwise the wider replica of proxy mode.

    @raise BackendError: the connection string or the TLS files cannot be used."""
    remotes, tls = southbound(settings)
    probe = probe_seconds(settings.ovsdb_probe_interval)
    retry_max = float(settings.ovsdb_retry_max_interval)
    name_source = None
    backend: OvnBackend
    if settings.ovn_chassis:
        try:
            ovs = parse_remotes(settings.ovs_ovsdb_connection)
        except RemoteError as e:
            raise BackendError(
                f"[ovs] ovsdb_connection: {e}. Fix: write unix:PATH or tcp:IP:PORT."
            ) from None

        def local_ovs(columns: Any, **callbacks: Any) -> OvsdbMonitor:
            return OvsdbMonitor(
                reactor,
                ovs,
                "Open_vSwitch",
                columns,
                timeout=float(settings.ovs_ovsdb_connection_timeout),
                probe_interval=probe,
                retry_max_interval=retry_max,
                **callbacks,
            )

        name_source = ChassisName(local_ovs, lambda name: backend.use_chassis(name))
    backend = OvnBackend(
        reactor,
        remotes,
        tls_options=tls,
        timeout=float(settings.ovsdb_connection_timeout),
        probe_interval=probe,
        retry_max_interval=retry_max,
        local=settings.ovn_chassis,
        name_source=None if name_source is None else name_source.monitor,
    )
    return backend
