"""dvc.yaml, params.yaml and the stage modules must agree: names, code deps, params, outputs.

Code deps go by effect: a stage depends on every repo module it runs, except the wiring,
which runs a stage without shaping what it writes (WIRING; tests/test_architecture.py shows
that no value from it reaches an output). So rewording a lock message re-runs nothing.
"""

import ast
import importlib
import re

import pytest
from conftest import REPO
from ruamel.yaml import YAML

from hotdog.core.names import STAGES
from hotdog.core.params import read_params

# The code that runs a stage but shapes none of its outputs: the runner (events, signals, the
# exit status), the run lock, the interpreter check, the events, the error types and the
# wording of params errors. No stage lists them as DVC deps.
WIRING = frozenset({
    "hotdog/runner/__init__.py", "hotdog/runner/stage.py", "hotdog/runner/runlock.py",
    "hotdog/runner/interpreter.py", "hotdog/core/events.py", "hotdog/core/errors.py",
    "hotdog/core/params_errors.py",
})
DVC = YAML(typ="safe").load((REPO / "dvc.yaml").read_text())
PATHS = read_params(REPO / "params.yaml").paths


def render(entry: str) -> str:
    """Substitute ${paths.x} as DVC does."""
    return re.sub(r"\$\{paths\.(\w+)\}", lambda m: str(getattr(PATHS, m.group(1))), entry)


def names(entries) -> list[str]:
    """Paths of a deps/outs/metrics list, whose items are strings or {path: options}."""
    return [render(e if isinstance(e, str) else next(iter(e))) for e in entries or []]


PACKAGES = ("hotdog", "stages")  # the repo's own code; anything else is a library's


def module_file(module: str) -> str:
    """The repo file of a dotted module name: "hotdog.training.train" -> "hotdog/training/train.py"."""
    path = module.replace(".", "/")
    return f"{path}/__init__.py" if (REPO / path).is_dir() else f"{path}.py"


def imported_modules(path: str) -> set[str]:
    """The repo modules a file imports, as dotted names, its packages' __init__ included
    (Python runs a package's __init__.py before any module in it)."""
    found = set()
    for node in ast.walk(ast.parse((REPO / path).read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from hotdog import events` imports hotdog.core.events; `from hotdog.x import f`, hotdog.x.
            names = [f"{node.module}.{a.name}" if (REPO / node.module.replace(".", "/") / f"{a.name}.py").exists()
                     else node.module for a in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in PACKAGES:
                parts = name.split(".")
                found |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return found


def stage_imports(stage: str, wiring: frozenset[str] = frozenset()) -> set[str]:
    """Every repo file that `python -m stages.<stage>` runs (transitive imports, function-level
    ones included), leaving out `wiring` and what only wiring imports."""
    todo, seen = [f"stages.{stage}", "stages"], set()
    while todo:
        module = todo.pop()
        if module not in seen and module_file(module) not in wiring:
            seen.add(module)
            todo += imported_modules(module_file(module))
    return {module_file(m) for m in seen}


def stage_deps(stage: str) -> set[str]:
    """The code deps a stage must declare: what it runs, less the wiring and the empty package
    inits (tests/test_architecture.py keeps them empty; DVC warns on every run about an
    empty dep)."""
    return {path for path in stage_imports(stage, WIRING)
            if not (path.endswith("/__init__.py") and not (REPO / path).read_text())}


def test_stage_names_and_order():
    assert tuple(DVC["stages"]) == STAGES


@pytest.mark.parametrize("name", STAGES)
def test_stage_runs_its_own_module(name):
    assert DVC["stages"][name]["cmd"] == f"python -m stages.{name}"


@pytest.mark.parametrize("name", STAGES)
def test_code_deps_are_exactly_the_imported_modules(name):
    deps = {d for d in names(DVC["stages"][name]["deps"]) if d.startswith(PACKAGES)}
    assert deps == stage_deps(name)


def test_every_stage_runs_the_wiring_and_depends_on_none_of_it():
    # The set is what every stage really runs (a name that drifted would leave a dep behind)...
    for name in STAGES:
        assert WIRING <= stage_imports(name)
        # ...and none of it is declared, while the module naming the outputs always is.
        declared = set(names(DVC["stages"][name]["deps"]))
        assert not declared & WIRING
        assert {"hotdog/core/paths.py", "hotdog/core/params.py"} <= declared


def test_code_deps_follow_what_each_stage_uses():
    # Editing the loop retrains both models; evaluate then re-runs because the checkpoints
    # changed, never because of the code. The eval transform is evaluate's and the training
    # stages' (their test views) and export's (its parity check), not decode's, whose resize is in
    # data/sizes.py (which the report's model card reads too, to describe the test view).
    loop, transform, sizes = "hotdog/training/train.py", "hotdog/data/transforms.py", "hotdog/data/sizes.py"
    assert loop in stage_deps("finetune") and loop in stage_deps("scratch") and loop not in stage_deps("evaluate")
    assert {name for name in STAGES if transform in stage_deps(name)} == {"finetune", "scratch", "evaluate", "export"}
    assert {name for name in STAGES if sizes in stage_deps(name)} == {"decode", "finetune", "scratch", "evaluate",
                                                                      "export", "report"}


@pytest.mark.parametrize("name", STAGES)
def test_params_are_the_keys_the_stage_declares(name):
    module = importlib.import_module(f"stages.{name}")
    assert DVC["stages"][name]["params"] == list(module.PARAMS)


def test_no_stage_declares_a_runtime_param():
    # runtime.* provably does not change results (tests/test_train.py), so no stage may
    # declare it: changing it must re-run nothing.
    for stage in DVC["stages"].values():
        assert not [p for p in stage["params"] if str(p).split(".")[0] == "runtime"]


@pytest.mark.parametrize("name", STAGES)
def test_outputs_match_the_code(name):
    stage = DVC["stages"][name]
    declared = names(stage.get("outs")) + names(stage.get("metrics")) + names(stage.get("plots"))
    module = importlib.import_module(f"stages.{name}")
    assert sorted(declared) == sorted(str(p) for p in module.outputs(PATHS))


def test_every_data_dep_comes_from_an_earlier_stage():
    made = set()
    for name in STAGES:
        stage = DVC["stages"][name]
        for dep in names(stage["deps"]):
            if not dep.startswith(tuple(f"{p}/" for p in PACKAGES)):
                assert dep in made, f"{name} depends on {dep}, which no earlier stage writes"
        made |= set(names(stage.get("outs")) + names(stage.get("metrics")) + names(stage.get("plots")))


def test_metrics_stay_in_git():
    # cache: false keeps metrics in git, so `dvc metrics diff` works from a plain clone.
    for stage in DVC["stages"].values():
        for entry in stage.get("metrics", []) + stage.get("plots", []):
            assert next(iter(entry.values())) == {"cache": False}
