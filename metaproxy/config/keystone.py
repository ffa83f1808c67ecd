"""The C{[neutron]} section read by keystoneauth1, exactly as nova reads its own.

L{load_keystone} loads the auth plugin (C{auth_type}; its options from C{[neutron]} or
from the section C{auth_section} names), the session (CA, client certificate, timeout)
and the adapter (service type, interfaces, region, endpoint override) with keystoneauth's
loaders. L{metaproxy.config.load.load_settings} calls it to refuse a bad section at
start-up and in C{check-config} (one L{ConfigError} naming the section, the option and
the fix); the Neutron API backend calls it to get the objects it uses.

Beyond keystoneauth's own checks (a required option, a known plugin), the credentials a
token needs are checked here, so that a missing one is named now rather than in a 401 at
the first instance's boot: the user, password and domain of password plugins, the scope
(a project, a domain or the system) of the plugins that take one, the application
credential. A secret is never shown.
"""

from __future__ import annotations

from typing import Any

import attrs
from keystoneauth1 import exceptions as ks_exceptions
from keystoneauth1 import loading
from oslo_config import cfg

from metaproxy.config.errors import ConfigError, Sources, bad_value, option_error
from metaproxy.config.options import find_option

__all__ = ["GROUP", "Keystone", "load_keystone"]

#: The section nova.conf and metaproxy read for Neutron's API.
GROUP = "neutron"
_WHY = "lookup_backend = neutron_api"


@attrs.frozen
class Keystone:
    """What keystoneauth made of C{[neutron]}.

    @ivar auth: the auth plugin (C{keystoneauth1.plugin.BaseAuthPlugin}).
    @ivar session: a C{keystoneauth1.session.Session} holding C{auth}, the TLS options
        and the timeout.
    @ivar adapter: a C{keystoneauth1.adapter.Adapter} for Neutron on C{session}.
    @ivar auth_type: the plugin's name.
    @ivar section: where the plugin's options were read (C{auth_section}, or neutron).
    @ivar auth_url: Keystone's URL (C{None} for plugins without one, e.g. C{none}).
    @ivar timeout: C{[neutron] timeout}, seconds.
    """

    auth: Any = attrs.field(repr=False)
    session: Any = attrs.field(repr=False)
    adapter: Any = attrs.field(repr=False)
    auth_type: str
    section: str
    auth_url: str | None
    timeout: float


def _http_url(value: str) -> bool:
    scheme, sep, rest = value.partition("://")
    return bool(sep) and scheme.lower() in ("http", "https") and bool(rest.strip("/"))


class _Section:
    """The plugin's options in C{section} and how to name one in a message."""

    def __init__(
        self, sources: Sources, section: str, auth_type: str, opts: list[cfg.Opt], values: dict
    ) -> None:
        self.sources = sources
        self.section = section
        self.auth_type = auth_type
        self.opts = {opt.dest: opt for opt in opts}
        self.values = values
        self.via = (
            f" (read from [{section}], which [{GROUP}] auth_section names)"
            if section != GROUP
            else ""
        )

    def has(self, name: str) -> bool:
        return name in self.opts

    def set(self, *names: str) -> bool:
        return any(self.values.get(name) for name in names)

    def error(self, name: str, problem: str, fix: str) -> ConfigError:
        return option_error(
            self.sources,
            self.section,
            self.opts[name],
            self.values.get(name),
            f"{_WHY} with auth_type = {self.auth_type} {problem}{self.via}",
            fix,
        )

    def need(self, names: tuple[str, ...], problem: str) -> None:
        """One of C{names} (those the plugin has) must be set."""
        names = tuple(n for n in names if self.has(n))
        if names and not self.set(*names):
            others = f" (or {', or '.join(names[1:])})" if names[1:] else ""
            raise self.error(names[0], problem, f"set [{self.section}] {names[0]}{others}")


def _auth_type(conf: cfg.ConfigOpts, sources: Sources) -> tuple[str, str, cfg.Opt]:
    """(section of the plugin's options, auth_type, its option), as keystoneauth finds
    them."""
    loading.register_auth_conf_options(conf, GROUP)  # auth_type in auth_section's section
    section = conf[GROUP].auth_section or GROUP
    auth_type = conf[section].auth_type
    if section != GROUP:
        where = f" in [{section}], which [{GROUP}] auth_section names"
        opt = next(o for o in loading.get_auth_common_conf_options() if o.dest == "auth_type")
    else:
        where, opt = "", find_option(GROUP, "auth_type")
    if not auth_type:
        raise option_error(
            sources,
            section,
            opt,
            auth_type,
            f"{_WHY} needs Keystone credentials{where}",
            f"set [{section}] auth_type = password (with auth_url, username, password, "
            "user_domain_name, project_name, project_domain_name) or "
            "v3applicationcredential (with auth_url, application_credential_id and "
            "application_credential_secret), as in nova.conf's [neutron] section",
        )
    try:
        loading.get_plugin_loader(auth_type)
    except ks_exceptions.NoMatchingPlugin:
        known = ", ".join(sorted(loading.get_available_plugin_names()))
        raise option_error(
            sources,
            section,
            opt,
            auth_type,
            f"keystoneauth has no auth plugin {auth_type!r}{where}",
            f"use one of {known}",
        ) from None
    return section, auth_type, opt


def _plugin_values(
    conf: cfg.ConfigOpts, sources: Sources, section: str, auth_type: str
) -> _Section:
    """The plugin's options, registered as keystoneauth registers them, each read (a
    value of the wrong type is named here rather than inside keystoneauth)."""
    opts = loading.get_auth_plugin_conf_options(auth_type)
    try:
        conf.register_opts(opts, group=section)
    except cfg.DuplicateOptError as e:  # a plugin option named like one of [neutron]'s
        raise ConfigError(
            f"[{section}] auth_type = {auth_type}: keystoneauth's plugin has an option "
            f"named like another option of [{section}] ({e}). Fix: choose another "
            f"auth_type, or set auth_section to a section of its own."
        ) from None
    values = {}
    for opt in opts:
        try:
            values[opt.dest] = conf[section][opt.dest]
        except (cfg.Error, ValueError) as exc:
            raise bad_value(sources, section, opt, exc) from None
    return _Section(sources, section, auth_type, opts, values)


def _check_credentials(p: _Section) -> None:
    """The plugin's required options (keystoneauth's list), then what a token needs
    beyond them."""
    for name, opt in p.opts.items():
        if opt.required and p.values.get(name) in (None, ""):
            if name == "auth_url":
                problem, example = "needs Keystone's URL", ", e.g. https://keystone.example:5000/v3"
            else:
                problem, example = f"needs {name}", ""
            raise p.error(name, problem, f"set [{p.section}] {name}{example}")
    url = p.values.get("auth_url")
    if url is not None:
        if not _http_url(url):
            raise p.error(
                "auth_url",
                "needs an http:// or https:// URL",
                f"set [{p.section}] auth_url, e.g. https://keystone.example:5000/v3",
            )
        if url.rstrip("/").endswith("/v2.0") and not p.auth_type.startswith("v2"):
            raise p.error(
                "auth_url",
                "authenticates with Keystone's v3 API only (v2.0 was removed from Keystone)",
                f"point [{p.section}] auth_url at /v3 (or at Keystone's root)",
            )
    if p.has("password"):
        p.need(("username", "user_id"), "needs the user")
        if not p.set("password"):
            raise p.error("password", "needs the password", f"set [{p.section}] password")
        if p.set("username") and not p.set("user_id"):
            p.need(
                ("user_domain_name", "user_domain_id", "default_domain_id", "default_domain_name"),
                "needs the user's domain",
            )
    if p.has("application_credential_id"):
        p.need(
            ("application_credential_id", "application_credential_name"),
            "needs the application credential",
        )
        if p.set("application_credential_name") and not p.set("application_credential_id"):
            p.need(("user_id", "username"), "with application_credential_name needs its user")
            if not p.set("user_id"):
                p.need(("user_domain_name", "user_domain_id"), "needs the user's domain")
        return  # an application credential carries its own scope
    if p.has("project_name"):
        p.need(
            (
                "project_name",
                "project_id",
                "system_scope",
                "domain_name",
                "domain_id",
                "trust_id",
            ),
            "needs the scope of the token (a project, the system or a domain)",
        )
        if p.set("project_name") and not p.set("project_id"):
            p.need(
                (
                    "project_domain_name",
                    "project_domain_id",
                    "default_domain_id",
                    "default_domain_name",
                ),
                "with project_name needs the project's domain",
            )


def load_keystone(conf: cfg.ConfigOpts, sources: Sources) -> Keystone:
    """The auth plugin, session and adapter keystoneauth loads from C{[neutron]}.

    C{conf} has metaproxy's options registered (L{metaproxy.config.options}) and the
    files read; the plugin's options are registered on it here.

    @raise ConfigError: the section cannot give a token; the message names the option.
    """
    section, auth_type, auth_type_opt = _auth_type(conf, sources)
    plugin = _plugin_values(conf, sources, section, auth_type)
    _check_credentials(plugin)
    try:
        auth = loading.load_auth_from_conf_options(conf, GROUP)
    except ks_exceptions.ClientException as e:  # the plugin's own refusal
        raise option_error(
            sources,
            section,
            auth_type_opt,
            auth_type,
            f"{_WHY}: keystoneauth cannot load the plugin{plugin.via} ({type(e).__name__}: {e})",
            f"give the plugin's options in [{section}], or choose another auth_type",
        ) from None
    session = loading.load_session_from_conf_options(conf, GROUP, auth=auth)
    try:
        adapter = loading.load_adapter_from_conf_options(conf, GROUP, session=session, auth=auth)
    except TypeError as e:  # keystoneauth's words: names the option
        name = "valid_interfaces" if "valid_interfaces" in str(e) else "version"
        raise option_error(
            sources,
            GROUP,
            find_option(GROUP, name),
            conf[GROUP][name],
            f"{_WHY}: {e}",
            f"correct [{GROUP}] {name}",
        ) from None
    return Keystone(
        auth=auth,
        session=session,
        adapter=adapter,
        auth_type=auth_type,
        section=section,
        auth_url=plugin.values.get("auth_url"),
        timeout=conf[GROUP].timeout,
    )
