"""L{load_settings}: read the operator's files, check every option, return L{Settings};
L{read_conf}: the files read into a private C{cfg.ConfigOpts}.

oslo.config reads the files into a private C{cfg.ConfigOpts} (never the global
C{cfg.CONF}); a missing, unreadable or malformed file, a bad value or a failed
cross-check (L{metaproxy.config.checks}) is one L{ConfigError}, and so is an oslo.log
option metaproxy does not implement (L{metaproxy.config.log_options}).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence

from oslo_config import cfg

from metaproxy.config.checks import cross_check
from metaproxy.config.errors import ConfigError, Sources, option_error, parse_error
from metaproxy.config.keystone import load_keystone
from metaproxy.config.log_options import refuse_unsupported, register_log_options
from metaproxy.config.options import find_option, register_options
from metaproxy.config.settings import Settings, build_settings, read_options
from metaproxy.namespace import InvalidNamespace, Namespace

__all__ = ["load_settings", "read_conf"]


def _parse_namespaces(entries: list[str], sources: Sources) -> tuple[Namespace, ...]:
    parsed: dict[Namespace, None] = {}
    for entry in entries:
        if not entry.strip():
            continue
        try:
            parsed[Namespace.parse(entry.strip())] = None
        except InvalidNamespace as exc:
            raise option_error(
                sources,
                "metaproxy",
                find_option("metaproxy", "namespaces"),
                entries,
                f"entry {entry.strip()!r} is not valid: {exc}",
                f"correct or remove {entry.strip()!r}; entries are qrouter-<router id>, "
                "qdhcp-<network id> or ovnmeta-<network id>, comma separated",
            ) from None
    return tuple(parsed)


def _files_read(config_files: Sequence[str], config_dirs: Sequence[str]) -> tuple[str, ...]:
    """The files oslo.config reads, in its order: the files, then each dir's *.conf."""
    files = [os.path.abspath(os.path.expanduser(f)) for f in config_files]
    for directory in config_dirs:
        files += sorted(glob.glob(os.path.join(os.path.expanduser(directory), "*.conf")))
    return tuple(os.path.abspath(f) for f in files)


def _undecodable(files: tuple[str, ...]) -> str:
    for path in files:
        try:
            with open(path) as f:
                f.read()
        except UnicodeDecodeError:
            return path
    return ", ".join(files)


def read_conf(config_files: Sequence[str], config_dirs: Sequence[str] = ()) -> cfg.ConfigOpts:
    """A private C{cfg.ConfigOpts} with every option of L{metaproxy.config.options}
    registered and the files read (``--config-file`` in order, then each
    ``--config-dir``'s ``*.conf`` sorted; later files win).

    Backends that hand a section to a library reading it itself (keystoneauth for
    C{[neutron]}) read the files again with it, from L{Settings.config_files}.

    @raise ConfigError: a file is missing, unreadable or malformed.
    """
    for directory in config_dirs:
        if not os.path.isdir(os.path.expanduser(directory)):
            raise ConfigError(
                f"{directory}: configuration directory not found. Fix: create it, or "
                f"remove --config-dir {directory}."
            )
    conf = cfg.ConfigOpts()
    register_options(conf)
    register_log_options(conf)
    try:
        conf(
            args=[],
            project="neutron",
            prog="metaproxy",
            use_env=False,
            default_config_files=list(config_files),
            default_config_dirs=[os.path.expanduser(d) for d in config_dirs],
        )
    except cfg.ConfigFilesNotFoundError as exc:
        raise ConfigError(
            f"{', '.join(exc.config_files)}: configuration file not found. Fix: correct "
            "the --config-file path or create the file."
        ) from None
    except cfg.ConfigFilesPermissionDeniedError as exc:
        raise ConfigError(
            f"{', '.join(exc.config_files)}: configuration file not readable. Fix: let "
            "metaproxy's user read it (chmod/chgrp)."
        ) from None
    except cfg.ConfigFileParseError as exc:
        raise parse_error(exc) from None
    except UnicodeDecodeError:
        raise ConfigError(
            f"{_undecodable(_files_read(config_files, config_dirs))}: not valid "
            "text in this locale's encoding. Fix: save it as UTF-8."
        ) from None
    except OSError as exc:  # a directory given as --config-file, say
        raise ConfigError(
            f"{exc.filename}: cannot be read ({exc.strerror}). Fix: give the "
            "path of a configuration file."
        ) from None
    return conf


def load_settings(config_files: list[str], config_dirs: list[str]) -> Settings:
    """Read the operator's files (``--config-file`` in order, then each ``--config-dir``'s
    ``*.conf`` sorted; later files win), check everything, return L{Settings}.

    With C{lookup_backend = neutron_api}, keystoneauth loads C{[neutron]}'s auth plugin,
    session and adapter too (L{metaproxy.config.keystone}), so that a section that
    cannot give a token is refused here.

    @raise ConfigError: a file is missing or unreadable, or a value is wrong.
    """
    conf = read_conf(config_files, config_dirs)
    files = _files_read(config_files, config_dirs)
    sources = Sources(files)
    values = read_options(conf, sources)
    refuse_unsupported(conf, sources)
    values["namespaces"] = _parse_namespaces(values["namespaces"], sources)
    settings = build_settings(
        values, files, lambda group, name: sources.where(group, name) is not None
    )
    cross_check(settings, sources)
    if settings.lookup_backend == "neutron_api":
        load_keystone(conf, sources)
    return settings
