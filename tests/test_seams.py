"""dvc.yaml, params.yaml and the stage modules must agree: names, code deps, params, outputs."""

import ast
import importlib
import re

import pytest
from conftest import REPO
from ruamel.yaml import YAML

from hotdog.params import read_params

STAGES = ["download", "weights", "manifest", "decode", "finetune", "scratch", "evaluate", "report"]
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
    """The repo file of a dotted module name: "hotdog.train" -> "hotdog/train.py"."""
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
            # `from hotdog import events` imports hotdog.events; `from hotdog.x import f`, hotdog.x.
            names = [f"{node.module}.{a.name}" if (REPO / node.module.replace(".", "/") / f"{a.name}.py").exists()
                     else node.module for a in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in PACKAGES:
                parts = name.split(".")
                found |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return found


def stage_imports(stage: str) -> set[str]:
    """Every repo file that `python -m stages.<stage>` runs: transitive imports, in files."""
    todo, seen = [f"stages.{stage}", "stages"], set()
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += imported_modules(module_file(module))
    return {module_file(m) for m in seen}


def test_stage_names_and_order():
    assert list(DVC["stages"]) == STAGES


@pytest.mark.parametrize("name", STAGES)
def test_stage_runs_its_own_module(name):
    assert DVC["stages"][name]["cmd"] == f"python -m stages.{name}"


@pytest.mark.parametrize("name", STAGES)
def test_code_deps_are_exactly_the_imported_modules(name):
    deps = {d for d in names(DVC["stages"][name]["deps"]) if d.startswith(PACKAGES)}
    assert deps == stage_imports(name)


def test_the_training_loop_is_not_a_dep_of_evaluate():
    # Editing the loop retrains both models; evaluate then re-runs because the checkpoints
    # changed, never because of the code. hotdog/errors.py, which every stage runs, is a dep
    # of all, which is honest.
    assert "hotdog/train.py" in stage_imports("finetune") and "hotdog/train.py" in stage_imports("scratch")
    assert "hotdog/train.py" not in stage_imports("evaluate")
    assert all("hotdog/errors.py" in stage_imports(name) for name in STAGES)


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


def test_flows_never_read_dvcs_own_words():
    # The flows learn what a stage did from its events (hotdog.events); DVC's text is only
    # passed on to the log. These are phrases of DVC's output that earlier code matched.
    for path in (REPO / "flows").glob("*.py"):
        text = path.read_text()
        for phrase in ("Running stage", "ERROR:", "failed to reproduce", "To track the changes", "TRANSIENT_EXIT"):
            assert phrase not in text, f"{path.name} matches DVC's text {phrase!r}"
