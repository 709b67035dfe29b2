"""The import graph of the project's own modules has no cycle, counting every import:
module level, under TYPE_CHECKING and inside functions (ast sees them all)."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

from testkit.env import ROOT

PACKAGES = ("bot", "handlers", "testkit", "bench", "tests")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imports_of(path: Path, known: dict[str, Path]) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                target = f"{node.module}.{alias.name}"
                if target in known:
                    found.add(target)
                elif node.module in known:
                    found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
    return found


def test_no_import_cycles_among_the_projects_modules() -> None:
    known = modules()
    graph = {name: imports_of(path, known) - {name} for name, path in known.items()}
    assert len(graph) > 20  # the walk found the project
    try:
        list(TopologicalSorter(graph).static_order())
    except CycleError as error:
        raise AssertionError(f"import cycle: {' -> '.join(error.args[1])}") from None


def test_the_checker_sees_a_cycle_hidden_in_a_function(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("import b\n")
    (tmp_path / "b.py").write_text("def f():\n    from a import x\n")
    known = {"a": tmp_path / "a.py", "b": tmp_path / "b.py"}
    graph = {name: imports_of(path, known) for name, path in known.items()}
    try:
        list(TopologicalSorter(graph).static_order())
    except CycleError:
        return
    raise AssertionError("a function-local cycle went unseen")


# The layers, bottom first: each may import itself and the layers below it, nothing above
# (docs/decisions/0017-one-home-for-each-concept.md). Settings and telemetry serve every
# layer; the job engine's contract (job names, the commands queue) sits below the Slack layer,
# so listeners enqueue without the worker's code; the processes, the jobs and the composition
# root sit on top of the listeners, and the operator's commands on top of those; the
# playground (`python -m bot try`, stand-ins included) on top of everything it starts.
LAYERS = (
    ("bot.settings",),
    ("bot.telemetry",),
    ("bot.exotel",),
    ("bot.webhooks",),
    ("bot.domain",),
    ("bot.engine",),
    ("bot.slack",),
    ("handlers",),
    ("bot.runtime",),
    ("bot.cli",),
    ("bot.playground",),
    ("bot.__main__",),
)
NO_SLACK = ("slack_sdk", "slack_bolt")


def _layer_of(name: str) -> int:
    """The module's layer; len(LAYERS), above them all, for a module in none."""
    for index, packages in enumerate(LAYERS):
        if any(_within(name, package) for package in packages):
            return index
    return len(LAYERS)


def test_each_layer_imports_only_the_layers_below_it() -> None:
    known = modules()
    placed = set()
    for name, path in known.items():
        if not name.startswith(("bot", "handlers")) or name == "bot":
            continue
        layer = _layer_of(name)
        assert layer < len(LAYERS), f"{name} is in no layer: add its package to LAYERS"
        placed.add(layer)
        for target in imports_of(path, known):
            assert _layer_of(target) <= layer, f"{name} imports {target}, above it"
        third_party = {alias.split(".")[0] for alias in _third_party_imports(path)}
        if layer <= _layer_of("bot.engine"):
            assert not third_party & set(NO_SLACK), f"{name} imports Slack"
        if _within(name, "bot.exotel") or _within(name, "bot.webhooks"):
            assert not third_party & {"redis", "rq"}, f"{name} imports Redis"
    assert placed == set(range(len(LAYERS)))


def test_the_layer_check_catches_an_import_pointing_up() -> None:
    assert _layer_of("bot.slack.messages") < _layer_of("bot.runtime.jobs")
    assert _layer_of("handlers.actions") < _layer_of("bot.runtime.app")
    assert _layer_of("bot.domain.onboarding") < _layer_of("bot.engine.queue")
    assert _layer_of("bot.nowhere") == len(LAYERS)


def _within(name: str, layer: str) -> bool:
    return name == layer or name.startswith(layer + ".")


# Who may not import whom among the top-level packages: the product imports no test code;
# testkit's stand-ins serve the tests and the benchmark, which import nothing of each other.
MAY_NOT_IMPORT = {
    "bot": ("testkit", "tests", "bench"),
    "handlers": ("testkit", "tests", "bench"),
    "testkit": ("tests", "bench"),
    "bench": ("tests",),
    "tests": ("bench",),
}


def test_the_product_imports_no_test_code_and_bench_and_tests_share_only_testkit() -> None:
    known = modules()
    for name, path in known.items():
        refused = MAY_NOT_IMPORT[name.split(".")[0]]
        for target in imports_of(path, known):
            assert target.split(".")[0] not in refused, f"{name} imports {target}"


def _third_party_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found
