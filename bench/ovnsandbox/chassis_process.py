"""The configuration metaproxy's chassis mode runs with in the OVN comparison.

The comparison starts C{twistd -n metaproxy --config-file metaproxy.ini}, the agent as
an operator runs it (L{bench.ovnsandbox.agents.start_chassis_process}). The file is what
an operator's C{neutron_ovn_metadata_agent.ini} holds: C{[ovs] ovsdb_connection} and
C{[ovn] ovn_sb_connection} (together they switch the chassis mode on), Nova and the
secret; nothing of metaproxy's own. Like upstream's agent, metaproxy then owns every
C{ovnmeta-} namespace of the host: the comparison refuses to run beside namespaces that
are not its sandbox's.
"""

from __future__ import annotations

__all__ = ["write_metaproxy_config"]


def write_metaproxy_config(
    path,
    *,
    state_path: str,
    sb_connection: str,
    nova_port: int,
    secret: str,
    ovs_connection: str = "unix:/run/openvswitch/db.sock",
    metrics_listen: str = "",
) -> None:
    """The agent's file: the OVN agent's own options only (reconnects kept short, as the
    sandbox restarts nothing but the agent); with C{metrics_listen}, also
    C{[metaproxy] metrics_listen} (C{/healthz} and C{/metrics}, which the scale run
    reads)."""
    own = f"\n[metaproxy]\nmetrics_listen = {metrics_listen}\n" if metrics_listen else ""
    path.write_text(
        "[DEFAULT]\n"
        f"state_path = {state_path}\n"
        "nova_metadata_host = 127.0.0.1\n"
        f"nova_metadata_port = {nova_port}\n"
        f"metadata_proxy_shared_secret = {secret.replace('$', '$$')}\n"
        "\n[ovs]\n"
        f"ovsdb_connection = {ovs_connection}\n"
        "\n[ovn]\n"
        f"ovn_sb_connection = {sb_connection}\n"
        "ovsdb_retry_max_interval = 5\n" + own
    )
