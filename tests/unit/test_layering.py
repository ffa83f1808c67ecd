"""The import structure docs/architecture.md describes, held against the code.

Every import of a metaproxy module by another, at module level or inside a function, is
read from the source (C{ast}, nothing is imported). Then: no cycle, no import from a
lower layer up to a higher one, and the package rules the page states. The layers here
are the page's table; change both together.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "metaproxy"

#: (module or package prefix, layer), longest prefix wins: docs/architecture.md, "Layering".
LAYERS = {
    "metaproxy.namespace": 0,
    "metaproxy.signing": 0,
    "metaproxy.pem": 0,
    "metaproxy.deadlines": 0,
    "metaproxy.ovsdb": 0,
    "metaproxy.ovn_scope": 0,
    "metaproxy.nova": 0,
    "metaproxy.http": 0,
    "metaproxy.ops": 0,
    "metaproxy.resolve.base": 0,
    "metaproxy.caller": 0,
    "metaproxy.config": 1,
    "metaproxy.guard": 1,
    "metaproxy.resolve": 1,
    "metaproxy.neutron": 1,
    "metaproxy.pipeline": 2,
    "metaproxy.chassis": 2,
    "metaproxy.agent": 3,
    "metaproxy.testing": 3,
    "metaproxy.tap": 4,
    "metaproxy.cli": 4,
    "metaproxy.__main__": 4,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.level:
                    raise AssertionError(f"{name}: relative import")
                # `from package import submodule` is an import of the submodule; the
                # package itself is imported only for the names that are not modules
                submodules = [f"{node.module}.{a.name}" for a in node.names]
                named = [s for s in submodules if s in modules]
                targets = named + ([node.module] if len(named) < len(submodules) else [])
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for target in targets:
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def _layer(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


GRAPH = _imports()


def test_every_module_has_a_layer():
    unplaced = [
        m
        for m in GRAPH
        if m != "metaproxy" and not any(m == p or m.startswith(p + ".") for p in LAYERS)
    ]
    assert unplaced == []


def test_no_import_runs_back_up_a_layer():
    upward = sorted(
        f"{m} (layer {_layer(m)}) imports {t} (layer {_layer(t)})"
        for m, targets in GRAPH.items()
        if m != "metaproxy"
        for t in targets
        if t != "metaproxy" and _layer(t) > _layer(m)
    )
    assert upward == []


def test_no_import_cycle():
    state: dict[str, int] = {}  # 1 on the path, 2 done
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(GRAPH[module]):
            if state.get(target) == 1:
                cycles.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert cycles == []


@pytest.mark.parametrize(
    ("package", "never"),
    [
        ("metaproxy.neutron", "metaproxy.resolve"),
        ("metaproxy.ops", "metaproxy.config"),
        ("metaproxy.http", "metaproxy.pipeline"),
        ("metaproxy.ovsdb", "metaproxy.nova"),
    ],
)
def test_package_rules(package, never):
    found = sorted(
        f"{m} imports {t}"
        for m, targets in GRAPH.items()
        if m.startswith(package)
        for t in targets
        if t == never or t.startswith(never + ".")
    )
    assert found == []


def test_the_check_sees_imports_inside_functions():
    """The agent's builders import the RPC bus inside a function (oslo.messaging only
    when used): such imports are part of the picture too."""
    assert "metaproxy.neutron.bus" in GRAPH["metaproxy.agent.builders"]
