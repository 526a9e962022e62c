"""The library's shape: no import cycle, empty package inits, every third-party import
declared, and wiring that provably shapes no output (so it is no DVC dep: test_seams.py)."""

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
import tomllib
from conftest import REPO, copy_run, dvc_status
from test_seams import STAGES, WIRING, module_file, stage_deps

LIBRARY = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "hotdog").rglob("*.py"))
ENTRY_POINTS = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "stages").glob("*.py"))


def module_name(path: str) -> str:
    return path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


def repo_imports(path: str) -> set[str]:
    """The hotdog modules a file imports anywhere in it (function bodies too), as files."""
    found = set()
    for node in ast.walk(ast.parse((REPO / path).read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "hotdog":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if (REPO / module_file(sub)).exists() else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "hotdog"}
    return {module_file(m) for m in found}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle in `graph` (a list of files, the first repeated at the end), or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one_and_only_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_library_has_no_import_cycle():
    # Imports inside functions count: they only hide a cycle until the function runs.
    graph = {path: repo_imports(path) for path in LIBRARY}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_every_package_init_is_empty():
    # Each __init__.py is a DVC dep of every stage that imports from its package.
    inits = [path for path in LIBRARY if path.endswith("__init__.py")]
    assert len(inits) >= 8
    assert {path: (REPO / path).read_text() for path in inits} == {path: "" for path in inits}


def declared_distributions() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0].lower().replace("_", "-")
            for spec in project["dependencies"]}


def third_party_imports(paths: list[str]) -> dict[str, str]:
    """{top-level module name: the first file importing it} for imports outside the stdlib and the repo."""
    found: dict[str, str] = {}
    for path in paths:
        for node in ast.walk(ast.parse((REPO / path).read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("hotdog", "stages", "flows", "__future__"):
                    found.setdefault(top, path)
    return found


def undeclared(imports: dict[str, str], declared: set[str]) -> list[str]:
    """One line per imported module whose distribution pyproject.toml does not declare."""
    owners = packages_distributions()
    lines = []
    for module, path in sorted(imports.items()):
        dists = {d.lower().replace("_", "-") for d in owners.get(module, [])}
        if not dists & declared:
            lines.append(f"{path} imports {module} (from {', '.join(sorted(dists)) or 'no installed package'}), "
                         "which pyproject.toml does not declare")
    return lines


def test_every_third_party_import_of_the_library_and_stages_is_declared():
    imports = third_party_imports(LIBRARY + ENTRY_POINTS)
    assert {"torch", "torchvision", "pyarrow", "dvc", "prefect", "PIL", "ruamel"} <= set(imports)
    assert undeclared(imports, declared_distributions()) == []


def test_an_undeclared_import_is_named():
    # filelock is installed (the tests use it) and declared only as a test extra.
    lines = undeclared({"filelock": "hotdog/x.py", "torch": "hotdog/y.py"}, declared_distributions())
    assert lines == ["hotdog/x.py imports filelock (from filelock), which pyproject.toml does not declare"]


# ---------------------------------------------------------------- wiring shapes no output


def wiring_names(tree: ast.Module) -> set[str]:
    """The local names a module binds to wiring modules or to what they define."""
    bound = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                source = module_file(sub) if (REPO / module_file(sub)).exists() else module_file(node.module)
                if source in WIRING:
                    bound.add(alias.asname or alias.name)
    return bound


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def leaks(path: str, source: str | None = None) -> list[str]:
    """Each place where a value from the wiring could reach what a module computes.

    Allowed uses: raising (`raise StageError(...)`), catching (`except Stopped`), deriving an
    error type from one, a class attribute of such a type (its exit code), a function that
    makes such an error for its caller to raise, an annotation, and a call whose result is
    dropped (`events.emit(...)`, `run_main(...)`). Each of these either ends the stage or
    leaves the computation as it was.
    """
    tree = ast.parse(source if source is not None else (REPO / path).read_text())
    names = wiring_names(tree)
    parents = _parents(tree)
    error_types, grew = set(), True  # classes derived from a wiring type, here or through another
    while grew:
        grew = False
        for node in ast.walk(tree):
            if (isinstance(node, ast.ClassDef) and node not in error_types
                    and any(isinstance(b, ast.Name) and (b.id in names or b.id in {c.name for c in error_types})
                            for b in node.bases)):
                error_types.add(node)
                grew = True
    error_names = names | {c.name for c in error_types}
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Name) and node.id in names):
            continue
        child, parent, ok = node, parents.get(node), False
        while parent is not None and not ok:
            if isinstance(parent, ast.Raise) or (isinstance(parent, ast.ExceptHandler) and child is parent.type):
                ok = True
            elif isinstance(parent, ast.ClassDef) and (child in parent.bases or parent in error_types):
                ok = True
            elif isinstance(parent, (ast.arg, ast.FunctionDef)) and child in (parent.annotation if isinstance(
                    parent, ast.arg) else parent.returns, ):
                ok = True
            elif isinstance(parent, ast.Return) and _makes_an_error(parent, parents, error_names):
                ok = True
            elif isinstance(parent, (ast.Assign, ast.AnnAssign)) and parents.get(parent) in error_types:
                ok = True  # a class attribute of an error type: its exit code
            elif isinstance(parent, ast.Expr) and isinstance(parent.value, ast.Call):
                ok = True
            elif isinstance(parent, (ast.stmt, ast.Lambda)) and not isinstance(parent, ast.ClassDef):
                break
            child, parent = parent, parents.get(parent)
        if not ok:
            found.append(f"{path}:{node.lineno}: {node.id}")
    return found


def _makes_an_error(ret: ast.Return, parents: dict, error_names: set[str]) -> bool:
    """Whether `return ...` is in a function annotated to return a wiring error type."""
    func = ret
    while func is not None and not isinstance(func, ast.FunctionDef):
        func = parents.get(func)
    return func is not None and isinstance(func.returns, ast.Name) and func.returns.id in error_names


def test_values_from_the_wiring_never_reach_an_output():
    # Every module a stage runs and depends on: the wiring's values go nowhere in them.
    checked = sorted(set().union(*(stage_deps(name) for name in STAGES)))
    users = [p for p in checked if wiring_names(ast.parse((REPO / p).read_text()))]
    assert len(users) >= 20  # the check reads real uses: errors and events are everywhere
    assert [leak for path in checked for leak in leaks(path)] == []


@pytest.mark.parametrize("code, leaked", [
    ("from hotdog.core.errors import TRANSIENT_EXIT\nsize = TRANSIENT_EXIT * 2\n", ["x.py:2: TRANSIENT_EXIT"]),
    ("from hotdog.core import events\ndef f():\n    return events.enabled()\n", ["x.py:3: events"]),
    ("from hotdog.core import events\nok = [events.emit(1)]\n", ["x.py:2: events"]),
    ("from hotdog.core.errors import StageError\nclass E(StageError):\n    exit_code = 3\n"
     "def f():\n    raise E('x')\n", []),
    ("from hotdog.core import events\ndef f(n):\n    events.emit(events.Progress(stage='s', done=n))\n", []),
    ("from hotdog.core.errors import StageError, TRANSIENT_EXIT\nclass E(StageError):\n    pass\n"
     "class F(E):\n    exit_code = TRANSIENT_EXIT\n", []),
    ("from hotdog.core.errors import StageError\ndef missing(p) -> StageError:\n    return StageError(p)\n", []),
    ("from hotdog.core.errors import StageError\ndef f(p) -> int:\n    return StageError(p).exit_code\n",
     ["x.py:3: StageError"]),
    ("from hotdog.core.errors import StageError\ntry:\n    pass\nexcept StageError:\n    raise\n", []),
])
def test_the_leak_check_tells_a_use_from_a_leak(code, leaked):
    assert leaks("x.py", code) == leaked


# ---------------------------------------------------------------- what DVC sees


def changed_stages(status: dict) -> set[str]:
    """The stages whose code deps changed, from `dvc status --json`."""
    return {stage for stage, entries in status.items()
            if any("changed deps" in entry for entry in entries if isinstance(entry, dict))}


def append_comment(path: Path) -> None:
    path.write_text(path.read_text() + "# a comment, which changes nothing\n")


def test_editing_the_wiring_re_runs_nothing_and_a_transform_re_runs_its_users(pipeline_run, tmp_path):
    project = copy_run(pipeline_run, tmp_path / "project")
    assert dvc_status(project) == {}
    for path in sorted(WIRING):
        append_comment(project / path)
    assert dvc_status(project) == {}
    append_comment(project / "hotdog/data/transforms.py")
    assert changed_stages(dvc_status(project)) == {"finetune", "scratch", "evaluate", "export"}
    append_comment(project / "hotdog/data/sizes.py")  # the report's model card describes the test view with it
    assert changed_stages(dvc_status(project)) == {"decode", "finetune", "scratch", "evaluate", "export", "report"}
