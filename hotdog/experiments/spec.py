"""The experiment set: experiments.yaml names the chapter's exercises, each a few params.yaml
keys to set (or one key's list of values, a grid). Read, shape-checked and validated
against params.yaml here, before anything runs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

from ruamel.yaml import YAML, YAMLError

from hotdog.core.errors import StageError
from hotdog.core.names import imagenet_hotdog_fits, imagenet_hotdog_misfit
from hotdog.core.overrides import check_overrides, parse_pairs
from hotdog.core.params import PARAMS_FILE, ParamsError

SET_FILE = Path("experiments.yaml")


# DVC names an experiment's git ref after it: letters, digits, '-' and '_', a letter first.
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


class ExperimentsError(StageError):
    """The experiment set, an override, or a dvc command is wrong; the message says which."""


def read_set(path: Path = SET_FILE) -> dict[str, dict[str, Any]]:
    """{experiment name: {dotted params key: value, or a list for a grid}}, shape-checked."""
    try:
        raw = YAML(typ="safe", pure=True).load(Path(path).read_text())
    except FileNotFoundError:
        raise ExperimentsError(f"{path} not found; run from the repo root") from None
    except YAMLError as err:
        # One line: ruamel's own text spans several, with the offending one quoted.
        mark, problem = getattr(err, "problem_mark", None), getattr(err, "problem", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ExperimentsError(f"{path}:{where} is not valid YAML ({problem or type(err).__name__}); "
                               "fix the syntax") from None
    if not isinstance(raw, dict) or not raw:
        raise ExperimentsError(f"{path}: expected a mapping of experiment names to the params they set")
    for name, overrides in raw.items():
        check_entry(str(name), overrides, path)
    return {str(name): dict(overrides) for name, overrides in raw.items()}


def check_entry(name: str, overrides: Any, where: Path | str) -> None:
    """One entry's shape: a DVC-safe name, and dotted keys to scalars or one non-empty list."""
    if not NAME.match(name):
        raise ExperimentsError(f"{where}: experiment name {name!r} must start with a letter and hold only "
                               "letters, digits, '-' and '_' (DVC makes a git ref of it); rename it")
    if not isinstance(overrides, dict) or not overrides:
        raise ExperimentsError(f"{where}: experiment {name!r} must map params.yaml keys to values")
    for key in overrides:
        section = str(key).split(".")[0]
        if section in ("paths", "runtime"):
            # runtime changes no result, so the run would be the baseline again; paths moves the
            # outputs the comparison reads.
            why = "changes no result" if section == "runtime" else "moves the outputs the comparison reads"
            raise ExperimentsError(f"{where}: experiment {name!r} sets {key}, and {section}.* {why}; set a param "
                                   "that changes what is trained or how it is measured (docs/params.md)")
    grids = [key for key, value in overrides.items() if isinstance(value, list)]
    if len(grids) > 1 or any(not overrides[key] for key in grids):
        raise ExperimentsError(f"{where}: experiment {name!r}: at most one key may hold a list (a grid), "
                               "and it must not be empty; split it into several experiments")
    values = [v for value in overrides.values() for v in (value if isinstance(value, list) else [value])]
    if any(isinstance(v, (list, dict)) or (isinstance(v, str) and "," in v) for v in values):
        raise ExperimentsError(f"{where}: experiment {name!r}: values must be plain numbers, booleans or "
                               "strings without commas (DVC reads a comma as a grid)")


def grid_key(overrides: dict[str, Any]) -> str | None:
    """The key whose list makes the entry a grid; a one-value list is a plain value, as DVC
    sees it (`-S key=x` is no sweep)."""
    return next((k for k, v in overrides.items() if isinstance(v, list) and len(v) > 1), None)


def runs_of(name: str, overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The experiments an entry runs, named as DVC names a grid's: name-1, name-2, ..."""
    plain = {k: v[0] if isinstance(v, list) else v for k, v in overrides.items()}
    grid = grid_key(overrides)
    if grid is None:
        return {name: plain}
    return {f"{name}-{i}": {**plain, grid: value} for i, value in enumerate(overrides[grid], 1)}


def check_set(experiments: dict[str, dict[str, Any]], sizes: dict[str, Any], params: Path = PARAMS_FILE) -> None:
    """Every run of the set, with `sizes` on top, makes valid params; else one error naming
    the experiment and the key. Nothing runs until this passes."""
    seen: set[str] = set()
    for name, overrides in experiments.items():
        check_entry(name, overrides, "experiments")
        grid = grid_key(overrides)
        if grid in sizes:
            raise ExperimentsError(f"experiment {name!r} is a grid over {grid}; do not set {grid} for all")
        for run, values in runs_of(name, overrides).items():
            if run in seen:
                raise ExperimentsError(f"two experiments would both be named {run!r}; rename one entry")
            seen.add(run)
            try:
                check_overrides({**values, **sizes}, params)
            except ParamsError as err:
                raise ExperimentsError(f"experiment {run!r}: {err}") from None


def not_applicable(values: dict[str, Any], classes: Sequence[str] | None) -> str | None:
    """Why one run of the set (its dotted keys) cannot apply to data of these classes (None
    when unknown: no run has written its manifest yet), or None when it can."""
    if classes is None:
        return None
    for key, value in values.items():
        if key.endswith(".head_init") and value == "imagenet-hotdog" and not imagenet_hotdog_fits(classes):
            return f"{key}: {imagenet_hotdog_misfit(classes)}"
    return None


def dvc_value(value: Any) -> str:
    """A value as a person writes it for `dvc exp run -S` (YAML), a list as DVC's grid syntax
    a,b,c: for the comparison's tables. A dvc command line takes set_param instead."""
    if isinstance(value, list):
        return ",".join(dvc_value(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    """`-S key=value` pairs from a command line, values read as YAML, as DVC reads them."""
    try:
        return parse_pairs(pairs, "-S")
    except ParamsError as err:
        raise ExperimentsError(str(err)) from None
