"""Configuration: the operator's ``neutron.conf`` and ``metadata_agent.ini``, read with
oslo.config under Neutron's option names and defaults, plus a ``[metaproxy]`` section.

L{load_settings} reads the files into a private C{cfg.ConfigOpts} (never the global
C{cfg.CONF}), reads and checks every option, and returns an immutable L{Settings}. Every
problem is one L{ConfigError} whose text names the file, the ``[section] option``, the
value and the fix. Secret options are never put in a message nor in a repr.

This module only re-exports the names the rest of metaproxy uses; each job lives in its
own module:

  - L{options} (with L{agent_options}, L{metaproxy_options}, L{backend_options}): the
    option schema, L{list_opts} and L{register_options};
  - L{errors}: L{ConfigError} and the helpers that write its messages;
  - L{settings}: L{Settings}, built from a C{cfg.ConfigOpts}, and L{default_settings};
  - L{checks}: the checks across options, per lookup backend too;
  - L{load}: L{load_settings}, reading the files;
  - L{listen}: L{parse_listen}, what a C{metrics_listen} entry means;
  - L{socketmode}: the socket's permissions; L{doc}: the sample file and docs/configuration.md.
"""

from __future__ import annotations

from metaproxy.config.errors import ConfigError
from metaproxy.config.listen import parse_listen
from metaproxy.config.load import load_settings
from metaproxy.config.options import list_opts, register_options
from metaproxy.config.settings import Settings, default_settings

__all__ = [
    "ConfigError",
    "Settings",
    "load_settings",
    "default_settings",
    "list_opts",
    "register_options",
    "parse_listen",
]
