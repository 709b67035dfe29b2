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


# What each layer may import of the project. handlers → Slack → domain → Exotel; the runtime
# (app factory, processes, jobs) sits on top; settings and the operator's metrics and logs
# serve every layer; listeners and the Slack layer reach the job engine through its contract,
# bot.runtime.queue (jobs by name), never the worker's code.
SHARED = ("bot.settings", "bot.ops.metrics", "bot.ops.logs")
QUEUE = "bot.runtime.queue"
MAY_IMPORT = {
    "bot.exotel": ("bot.exotel",),
    "bot.domain": ("bot.domain", "bot.exotel", *SHARED),
    "bot.slack": ("bot.slack", "bot.domain", "bot.exotel", QUEUE, *SHARED),
    "handlers": ("handlers", "bot.slack", "bot.domain", "bot.exotel", QUEUE, *SHARED),
    QUEUE: ("bot.domain", "bot.exotel", *SHARED),
}
NO_SLACK = ("slack_sdk", "slack_bolt")


def test_each_layer_imports_only_the_layers_below_it() -> None:
    known = modules()
    checked = set()
    for name, path in known.items():
        # The most specific rule: bot.runtime.queue is not the rest of bot.runtime.
        layer = max((layer for layer in MAY_IMPORT if _within(name, layer)), key=len,
                    default=None)
        if layer is None:
            continue
        checked.add(layer)
        for target in imports_of(path, known):
            assert target.startswith(MAY_IMPORT[layer]), f"{name} imports {target}"
        third_party = {alias.split(".")[0] for alias in _third_party_imports(path)}
        if layer in ("bot.exotel", "bot.domain", QUEUE):
            assert not third_party & set(NO_SLACK), f"{name} imports Slack"
        if layer == "bot.exotel":
            assert not third_party & {"redis", "rq"}, f"{name} imports Redis"
    assert checked == set(MAY_IMPORT)


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
