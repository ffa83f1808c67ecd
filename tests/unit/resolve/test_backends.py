"""metaproxy.resolve.backends: choosing the backend and its optional lifecycle calls."""

from pathlib import Path

import attrs
import pytest
from twisted.internet.defer import succeed
from twisted.internet.task import Clock

from metaproxy.config import default_settings
from metaproxy.resolve import backends
from metaproxy.resolve.base import BackendError
from metaproxy.resolve.table import TableBackend


def test_table_backend_is_built_from_lookup_table(tmp_path: Path) -> None:
    (tmp_path / "ports.json").write_text('{"ports": []}')
    settings = default_settings(lookup_table=str(tmp_path / "ports.json"))
    backend = backends.build_backend(Clock(), settings)
    assert isinstance(backend, TableBackend)
    assert backends.describe_backend(backend) == f"table {tmp_path / 'ports.json'} (0 ports)"


def test_bad_table_is_a_backend_error_naming_the_option(tmp_path: Path) -> None:
    settings = default_settings(lookup_table=str(tmp_path / "missing.json"))
    with pytest.raises(BackendError, match=r"^\[metaproxy\] lookup_table: .*missing\.json"):
        backends.build_backend(Clock(), settings)


def test_unknown_backend_names_the_choices() -> None:
    settings = attrs.evolve(default_settings(), lookup_backend="nope")
    with pytest.raises(BackendError, match="lookup_backend = nope: no such backend.*table"):
        backends.build_backend(Clock(), settings)


def test_lifecycle_defaults_for_a_backend_without_them() -> None:
    bare = object()
    backends.start_backend(bare)
    backends.reload_backend(bare)
    assert backends.backend_ready(bare) is True
    assert backends.describe_backend(bare) == "object"
    assert backends.stop_backend(bare).result is None


def test_lifecycle_calls_reach_a_backend_that_has_them() -> None:
    calls = []

    class Managed:
        def start(self):
            calls.append("start")

        def stop(self):
            calls.append("stop")
            return succeed("stopped")

        def reload(self):
            calls.append("reload")

        def ready(self):
            return False

        def describe(self):
            return "managed"

    m = Managed()
    backends.start_backend(m)
    backends.reload_backend(m)
    assert backends.stop_backend(m).result == "stopped"
    assert backends.backend_ready(m) is False
    assert backends.describe_backend(m) == "managed"
    assert calls == ["start", "reload", "stop"]
