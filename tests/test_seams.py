"""dvc.yaml, params.yaml and the stage modules must agree: names, code deps, params, outputs."""

import ast
import importlib
import re

import pytest
from conftest import REPO
from ruamel.yaml import YAML

from stages.params import read_params

STAGES = ["download", "weights", "manifest", "decode", "finetune", "scratch", "evaluate", "report"]
DVC = YAML(typ="safe").load((REPO / "dvc.yaml").read_text())
PATHS = read_params(REPO / "params.yaml").paths


def render(entry: str) -> str:
    """Substitute ${paths.x} as DVC does."""
    return re.sub(r"\$\{paths\.(\w+)\}", lambda m: str(getattr(PATHS, m.group(1))), entry)


def names(entries) -> list[str]:
    """Paths of a deps/outs/metrics list, whose items are strings or {path: options}."""
    return [render(e if isinstance(e, str) else next(iter(e))) for e in entries or []]


def stage_imports(module: str, seen=None) -> set[str]:
    """stages/*.py files that `module` imports, transitively, itself included."""
    seen = set() if seen is None else seen
    path = f"stages/{module}.py"
    if path in seen:
        return seen
    seen.add(path)
    for node in ast.walk(ast.parse((REPO / path).read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "stages":
            found = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("stages."):
            found = [node.module.split(".")[1]]
        else:
            continue
        for name in found:
            stage_imports(name, seen)
    return seen


def test_stage_names_and_order():
    assert list(DVC["stages"]) == STAGES


@pytest.mark.parametrize("name", STAGES)
def test_stage_runs_its_own_module(name):
    assert DVC["stages"][name]["cmd"] == f"python -m stages.{name}"


@pytest.mark.parametrize("name", STAGES)
def test_code_deps_are_exactly_the_imported_modules(name):
    deps = {d for d in names(DVC["stages"][name]["deps"]) if d.startswith("stages/")}
    assert deps == stage_imports(name)


@pytest.mark.parametrize("name", STAGES)
def test_params_are_the_sections_the_stage_reads(name):
    module = importlib.import_module(f"stages.{name}")
    assert DVC["stages"][name]["params"] == list(module.SECTIONS)


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
            if not dep.startswith("stages/"):
                assert dep in made, f"{name} depends on {dep}, which no earlier stage writes"
        made |= set(names(stage.get("outs")) + names(stage.get("metrics")) + names(stage.get("plots")))


def test_metrics_stay_in_git():
    # cache: false keeps metrics in git, so `dvc metrics diff` works from a plain clone.
    for stage in DVC["stages"].values():
        for entry in stage.get("metrics", []) + stage.get("plots", []):
            assert next(iter(entry.values())) == {"cache": False}
