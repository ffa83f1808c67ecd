"""C{twistd metaproxy}: command-line options and the service (the only twistd-aware module).

    twistd -n metaproxy --config-file /etc/neutron/neutron.conf \\
                        --config-file /etc/neutron/metadata_agent.ini \\
                        --log-file /var/log/neutron/metaproxy.log

Configuration and the lookup table are read and checked while options are parsed, so a
bad file stops start-up with one message (naming the file, the option and the fix)
instead of a traceback. So are the log's destinations (L{metaproxy.ops.logs}): a log
file that cannot be opened or a syslog daemon that cannot be reached stops it too.

C{--log-file} and C{--log-dir} are oslo.log's command-line forms of C{[DEFAULT]
log_file} and C{log_dir}, which distributions' units for neutron-metadata-agent pass;
as with oslo.config, the command line wins over the files.
"""

from __future__ import annotations

import attrs
from twisted.application.service import IService
from twisted.python import usage

from metaproxy.config import ConfigError, load_settings
from metaproxy.config.settings import log_file_path

__all__ = ["Options", "makeService"]


class Options(usage.Options):
    synopsis = "[--config-file FILE]... [--config-dir DIR]... [--log-file FILE] [--log-dir DIR]"
    longdesc = (
        "Neutron metadata agent replacement. Reads the operator's neutron.conf and "
        "metadata_agent.ini (same option names and defaults as "
        "neutron-metadata-agent) plus a [metaproxy] section."
    )

    def __init__(self) -> None:
        super().__init__()
        self["config_files"] = []
        self["config_dirs"] = []
        self["log_file"] = None
        self["log_dir"] = None
        self.settings = None
        self.backend = None
        self.log_setup = None

    def opt_config_file(self, path: str) -> None:
        """A configuration file to read (repeatable; later files win)."""
        self["config_files"].append(path)

    def opt_config_dir(self, path: str) -> None:
        """A directory whose *.conf files are read after the --config-file files (repeatable)."""
        self["config_dirs"].append(path)

    def opt_log_file(self, path: str) -> None:
        """The log file, as oslo.log's --log-file (wins over [DEFAULT] log_file)."""
        self["log_file"] = path

    def opt_log_dir(self, path: str) -> None:
        """The log file's directory, as oslo.log's --log-dir (wins over [DEFAULT] log_dir)."""
        self["log_dir"] = path

    def postOptions(self) -> None:
        from twisted.internet import reactor

        from metaproxy.http.listeners import ListenError, prepare_socket_path
        from metaproxy.ops.log_destinations import LogDestinationError
        from metaproxy.ops.logs import LogSetup
        from metaproxy.resolve.backends import build_backend
        from metaproxy.resolve.base import BackendError

        try:
            self.settings = load_settings(self["config_files"], self["config_dirs"])
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None
        if self["log_file"] is not None or self["log_dir"] is not None:
            log_file = self["log_file"] if self["log_file"] is not None else self.settings.log_file
            log_dir = self["log_dir"] if self["log_dir"] is not None else self.settings.log_dir
            self.settings = attrs.evolve(
                self.settings,
                log_file=log_file,
                log_dir=log_dir,
                log_path=log_file_path(log_file, log_dir),
            )
        # twistd's own options (--logfile, --nodaemon, --syslog, --prefix) are parsed
        # before ours: with oslo.log's, they say where the log goes
        try:
            self.log_setup = LogSetup.for_twistd(
                reactor, getattr(self, "parent", None), self.settings
            )
        except LogDestinationError as e:
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

    from metaproxy.agent.gcfreeze import freeze_when_running
    from metaproxy.agent.service import AgentService

    service = AgentService(
        reactor,
        options.settings,
        options.backend,
        config_files=tuple(options["config_files"]),
        config_dirs=tuple(options["config_dirs"]),
        log_setup=options.log_setup,
    )
    # start-up's objects out of the garbage collector's sight once it is done
    freeze_when_running(reactor)
    return service
