"""Upstream's C{neutron-ovn-metadata-agent}, unpatched, as the sandbox chassis's agent.

    agent = start_upstream_ovn_agent(sandbox, run_dir, nova_port=port, secret="s")
    ...                              # it provisions ovnmeta-<net>, one haproxy in each
    agent.stop()                     # the agent, its privsep daemons (its session)

It runs from the virtualenv L{bench.compare.upstream.ensure_upstream_venv} installs (neutron
from the package index), as root, exactly as a node runs it, with two files:

  - C{neutron.conf}: C{state_path}, the lock path, the log file;
  - C{neutron_ovn_metadata_agent.ini}: C{[ovs] ovsdb_connection} (the sandbox's
    Open_vSwitch database), C{[ovn] ovn_sb_connection}, C{metadata_proxy_socket},
    Nova's host and port, the shared secret; C{[agent] root_helper} empty (it is root:
    no sudo, no rootwrap); and a C{helper_command} for each privsep context Neutron
    defines (C{[privsep]}, C{[privsep_link]}, C{[privsep_namespace]},
    C{[privsep_ovs_vsctl]}, C{[privsep_conntrack]}, C{[privsep_dhcp_release]}): the
    virtualenv's C{privsep-helper} with the same two files, because oslo.privsep would
    otherwise prefix C{sudo} even with an empty root helper.

It is started in a session of its own with C{/usr/sbin} on C{PATH} (C{ip}, C{haproxy},
C{iptables}); the privsep daemons it forks stay in that session, so L{UpstreamOvnAgent}
finds and stops them by session. Its haproxies (one per C{ovnmeta-} namespace, daemons
in sessions of their own) are found in those namespaces, and go with them.

B{Upstream owns every C{ovnmeta-} namespace on the host}: on start it tears down those
it does not need. L{foreign_ovnmeta} lists the ones that are not the sandbox's, and
L{start_upstream_ovn_agent} refuses to start while there are any.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from bench.compare.upstream import DEFAULT_VENV, ensure_upstream_venv, upstream_installed
from bench.ovnsandbox.daemons import OvnSandbox, SandboxError, netns_list
from bench.ovnsandbox.sessions import SessionAgent

__all__ = [
    "PRIVSEP_CONTEXTS",
    "UpstreamOvnAgent",
    "foreign_ovnmeta",
    "refuse_beside_foreign_ovnmeta",
    "start_upstream_ovn_agent",
    "upstream_missing",
    "write_upstream_ovn_config",
]

#: The privsep contexts Neutron 29 defines (C{neutron.privileged}), one daemon each when used.
PRIVSEP_CONTEXTS = (
    "privsep",
    "privsep_link",
    "privsep_namespace",
    "privsep_ovs_vsctl",
    "privsep_conntrack",
    "privsep_dhcp_release",
)
#: Where upstream looks for the programs it runs (ip, haproxy, iptables, ovs-vsctl).
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
AGENT = "neutron-ovn-metadata-agent"


def upstream_missing(venv_dir: Path = DEFAULT_VENV) -> str | None:
    """One line saying why upstream's OVN metadata agent cannot run here, or None."""
    if not upstream_installed(venv_dir):
        return f"no upstream neutron virtualenv at {venv_dir} (make upstream)"
    if not (Path(venv_dir) / "bin" / AGENT).exists():
        return f"{venv_dir}/bin/{AGENT} not found"
    if not any(os.access(f"{d}/haproxy", os.X_OK) for d in ("/usr/sbin", "/usr/bin")):
        return "haproxy not found (Debian package haproxy)"
    return None


def _value(text: str) -> str:
    if "\n" in text:
        raise ValueError("configuration values cannot contain a newline")
    return text.replace("$", "$$")


def write_upstream_ovn_config(
    run_dir: Path,
    *,
    venv_dir: Path,
    ovs_connection: str,
    sb_connection: str,
    nova_port: int,
    secret: str,
    nova_host: str = "127.0.0.1",
    debug: bool = False,
) -> tuple[Path, Path]:
    """Write C{neutron.conf} and C{neutron_ovn_metadata_agent.ini} into C{run_dir};
    return both paths (in the order they are given to the agent).

    @raise ValueError: the agent's socket path under C{run_dir} is too long.
    """
    run_dir = Path(run_dir)
    state = run_dir / "state"
    socket_path = state / "metadata_proxy"
    if len(os.fsencode(str(socket_path))) > 107:
        raise ValueError(
            f"socket path {socket_path} is too long for a Unix socket; use a shorter run_dir"
        )
    neutron_conf = run_dir / "neutron.conf"
    agent_ini = run_dir / "neutron_ovn_metadata_agent.ini"
    neutron_conf.write_text(
        "[DEFAULT]\n"
        f"state_path = {_value(str(state))}\n"
        f"log_file = {_value(str(run_dir / (AGENT + '.log')))}\n"
        "use_stderr = false\n"
        f"debug = {'true' if debug else 'false'}\n"
        "\n[oslo_concurrency]\n"
        f"lock_path = {_value(str(state / 'lock'))}\n"
    )
    helper = (
        f"{_value(str(Path(venv_dir) / 'bin' / 'privsep-helper'))} "
        f"--config-file {_value(str(neutron_conf))} --config-file {_value(str(agent_ini))}"
    )
    privsep = "".join(f"\n[{context}]\nhelper_command = {helper}\n" for context in PRIVSEP_CONTEXTS)
    agent_ini.write_text(
        "[DEFAULT]\n"
        f"metadata_proxy_socket = {_value(str(socket_path))}\n"
        f"nova_metadata_host = {nova_host}\n"
        f"nova_metadata_port = {nova_port}\n"
        "nova_metadata_protocol = http\n"
        f"metadata_proxy_shared_secret = {_value(secret)}\n"
        "\n[agent]\n"
        "# root already: no sudo, no rootwrap\n"
        "root_helper =\n"
        "\n[ovs]\n"
        f"ovsdb_connection = {_value(ovs_connection)}\n"
        "\n[ovn]\n"
        f"ovn_sb_connection = {_value(sb_connection)}\n"
        f"{privsep}"
    )
    (state / "lock").mkdir(parents=True, exist_ok=True)
    return neutron_conf, agent_ini


def foreign_ovnmeta(sandbox: OvnSandbox) -> list[str]:
    """C{ovnmeta-} namespaces on the host that are not the sandbox's (its network ids
    start with its tag)."""
    mine = f"ovnmeta-{sandbox.tag}"
    return [ns for ns in netns_list() if ns.startswith("ovnmeta-") and not ns.startswith(mine)]


def refuse_beside_foreign_ovnmeta(sandbox: OvnSandbox, who: str) -> None:
    """Raise L{SandboxError} when there are C{ovnmeta-} namespaces that are not the
    sandbox's: C{who} (an agent that owns every C{ovnmeta-} namespace) would delete them."""
    foreign = foreign_ovnmeta(sandbox)
    if foreign:
        raise SandboxError(
            f"{who} deletes every ovnmeta- namespace it does not need, and these are not "
            f"the sandbox's: {', '.join(foreign[:5])}; run it when they are gone"
        )


class UpstreamOvnAgent(SessionAgent):
    """The running agent: its session (the agent and its privsep daemons) and log."""

    name = "upstream"
    log_names = (AGENT + ".log", AGENT + ".stderr")


def start_upstream_ovn_agent(
    sandbox: OvnSandbox,
    run_dir: Path,
    *,
    nova_port: int,
    secret: str,
    venv_dir: Path = DEFAULT_VENV,
    debug: bool = False,
) -> UpstreamOvnAgent:
    """Start the agent on C{sandbox} (returns at once: readiness is the caller's to
    measure, by asking from the instances).

    @raise SandboxError: there are C{ovnmeta-} namespaces that are not the sandbox's
        (upstream would tear them down).
    """
    refuse_beside_foreign_ovnmeta(sandbox, f"upstream's {AGENT}")
    venv_dir = Path(venv_dir)
    ensure_upstream_venv(venv_dir)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    files = write_upstream_ovn_config(
        run_dir,
        venv_dir=venv_dir,
        ovs_connection=sandbox.remote("ovs"),
        sb_connection=sandbox.remote("sb", "tcp"),
        nova_port=nova_port,
        secret=secret,
        debug=debug,
    )
    argv = [str(venv_dir / "bin" / AGENT)]
    for path in files:
        argv += ["--config-file", str(path)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = PATH
    with open(run_dir / (AGENT + ".stderr"), "wb") as stderr:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=subprocess.STDOUT,
            cwd=str(run_dir),
            env=env,
            start_new_session=True,
        )
    return UpstreamOvnAgent(popen, run_dir)
