"""C{twistd metaproxy}: command-line options and the service (the only twistd-aware module).

    twistd -n metaproxy --config-file /etc/neutron/neutron.conf \\
                        --config-file /etc/neutron/metadata_agent.ini

Configuration and the lookup table are read and checked while options are parsed, so a
bad file stops start-up with one message (naming the file, the option and the fix)
instead of a traceback.
"""

from __future__ import annotations

from twisted.application.service import IService
from twisted.python import usage

from metaproxy.config import ConfigError, load_settings

__all__ = ["Options", "makeService"]


class Options(usage.Options):
    synopsis = "[--config-file FILE]... [--config-dir DIR]..."
    longdesc = (
        "Neutron metadata agent replacement. Reads the operator's neutron.conf and "
        "metadata_agent.ini (same option names and defaults as "
        "neutron-metadata-agent) plus a [metaproxy] section."
    )

    def __init__(self) -> None:
        super().__init__()
        self["config_files"] = []
        self["config_dirs"] = []
        self.settings = None
        self.backend = None

    def opt_config_file(self, path: str) -> None:
        """A configuration file to read (repeatable; later files win)."""
        self["config_files"].append(path)

    def opt_config_dir(self, path: str) -> None:
        """A directory whose *.conf files are read after the --config-file files (repeatable)."""
        self["config_dirs"].append(path)

    def postOptions(self) -> None:
        from twisted.internet import reactor

        from metaproxy.http.listeners import ListenError, prepare_socket_path
        from metaproxy.resolve.backends import build_backend
        from metaproxy.resolve.base import BackendError

        try:
            self.settings = load_settings(self["config_files"], self["config_dirs"])
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None
        try:
            self.backend = build_backend(reactor, self.settings)
        except BackendError as e:
            raise usage.UsageError(str(e)) from None
        # refuse to start (rather than fail later) when another process owns our sockets
        for option, path in (
            ("[DEFAULT] metadata_proxy_socket", self.settings.metadata_proxy_socket),
            ("[metaproxy] control_socket", self.settings.control_socket),
        ):
            try:
                prepare_socket_path(path)
            except ListenError as e:
                raise usage.UsageError(f"{option}: {e}") from None


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    from metaproxy.agent.service import AgentService
    from metaproxy.ops.logs import LogSetup

    # twistd's own options (--logfile, --nodaemon, --syslog): where our log goes
    log_setup = LogSetup.for_twistd(reactor, getattr(options, "parent", None), options.settings)
    return AgentService(
        reactor,
        options.settings,
        options.backend,
        config_files=tuple(options["config_files"]),
        config_dirs=tuple(options["config_dirs"]),
        log_setup=log_setup,
    )
