"""L{ConfigError} and the helpers that write its messages.

Every message names the file and the ``[section] option`` (L{Sources} finds the line
that set it), the value as written, what is wrong and the fix. A secret option's value is
never shown.
"""

from __future__ import annotations

import configparser
from typing import Any

from oslo_config import cfg, iniparser, types

__all__ = [
    "ConfigError",
    "Sources",
    "allowed_values",
    "default_text",
    "option_error",
    "bad_value",
    "parse_error",
]


class ConfigError(Exception):
    """The configuration cannot be used; str() is one message for the operator."""


class Sources:
    """Where each option was set: the files read again with configparser, last wins."""

    def __init__(self, files: tuple[str, ...]):
        self.files = files
        self._found: dict[tuple[str, str], tuple[str, str]] = {}
        for path in files:
            parser = configparser.RawConfigParser(
                strict=False, interpolation=None, default_section="\0"
            )
            parser.optionxform = str  # type: ignore[assignment,method-assign]
            try:
                parser.read(path)
            except (configparser.Error, OSError, UnicodeError):
                continue  # oslo.config read it; we only lose the attribution
            for section in parser.sections():
                group = "DEFAULT" if section == "DEFAULT" else section.lower()
                for key, value in parser.items(section, raw=True):
                    self._found[(group, key)] = (path, value)

    def where(self, group: str, name: str) -> tuple[str, str] | None:
        """(file, value as written) of the line that sets the option, or None."""
        return self._found.get((group if group == "DEFAULT" else group.lower(), name))


def allowed_values(opt: cfg.Opt) -> str:
    """What C{opt} accepts, in words."""
    t = opt.type
    if getattr(t, "choices", None):
        return "one of " + ", ".join(c for c in t.choices if c is not None)  # None: unset
    if isinstance(t, types.Boolean):
        return "true or false"
    if isinstance(t, types.Port):
        return "a port number from 0 to 65535"
    if isinstance(t, (types.Integer, types.Float)):
        noun = "an integer" if isinstance(t, types.Integer) else "a number"
        bounds = [f">= {t.min}"] * (t.min is not None) + [f"<= {t.max}"] * (t.max is not None)
        return " ".join([noun, " and ".join(bounds)]).strip()
    if isinstance(t, types.HostDomain):
        return "a host name"
    if isinstance(t, types.HostAddress):
        return "an IP address or a DNS name"
    if isinstance(t, types.List):
        return "a comma-separated list"
    return "text ($name refers to another option; write $$ for a literal $)"


def default_text(opt: cfg.Opt, sample: bool = True) -> str:
    """The default as the sample file writes it (C{sample}) or as a message names it."""
    if opt.sample_default is not None and (sample or opt.default is None):
        return str(opt.sample_default)
    if opt.default is None:
        return "<None>" if sample else "(unset)"
    if isinstance(opt.default, bool):
        return str(opt.default).lower()
    if isinstance(opt.default, list):
        return ",".join(map(str, opt.default)) if sample or opt.default else "(empty)"
    return str(opt.default) if sample or opt.default != "" else "(empty)"


def option_error(
    sources: Sources, group: str, opt: cfg.Opt, value: Any, problem: str, fix: str
) -> ConfigError:
    """One message: file, [section] option = value, what is wrong, and the fix."""
    found = sources.where(group, opt.dest)
    if found is not None:
        shown = "(value hidden)" if opt.secret else repr(found[1])
        head = f"{found[0]}: [{group}] {opt.dest} = {shown}"
    else:
        shown = "(value hidden)" if opt.secret else repr(value)
        read = ", ".join(sources.files) or "no configuration file"
        head = f"[{group}] {opt.dest} = {shown} (default {default_text(opt)!r}, not set in {read})"
    return ConfigError(f"{head}: {problem}. Fix: {fix}.")


def bad_value(sources: Sources, group: str, opt: cfg.Opt, exc: Exception) -> ConfigError:
    allowed = allowed_values(opt)
    found = sources.where(group, opt.dest)
    default = f"remove the line to use the default {default_text(opt, sample=False)}"
    if found is not None and "$" in found[1] and not isinstance(exc, ValueError):
        problem = "refers with $ to something that is not an option"
        fix = (
            f"write $$ for a literal $ ($name must name an option, e.g. $state_path), or {default}"
        )
    elif opt.secret:
        problem, fix = f"is not valid; allowed: {allowed}", f"set {allowed}, or {default}"
    else:
        reason = str(exc).partition("is not valid: ")[2] or str(exc)
        problem = f"is not valid ({reason}); allowed: {allowed}"
        fix = f"set {allowed}, or {default}"
    return option_error(sources, group, opt, None, problem, fix)


def parse_error(exc: cfg.ConfigFileParseError) -> ConfigError:
    cause = exc.__context__
    if isinstance(cause, iniparser.ParseError):
        # Only a section header is quoted: any other line may hold a password.
        line = f": {cause.line!r}" if (cause.line or "").startswith("[") else ""
        problem = f"line {cause.lineno}: {cause.msg}{line}"
    else:
        problem = "cannot be parsed"
    return ConfigError(
        f"{exc.config_file}: {problem}. Fix: write 'name = value' lines under a "
        "[section] header (indented lines continue the previous value)."
    )
