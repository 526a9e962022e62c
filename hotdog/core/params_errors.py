"""How a problem in params.yaml is worded: one line saying which key, what is wrong, what to do.

Wiring (tests/test_seams.py): this only words the error a stage stops with and shapes no
output, so no stage lists it as a DVC dep, and rewording a message here re-runs nothing.
The checks themselves live in hotdog.core.params, which every stage depends on.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from pydantic import ValidationError
from ruamel.yaml import YAMLError

from hotdog.core.errors import StageError

# pydantic's strict type errors: a quoted "128" or "true" in YAML is a string.
_TYPES = {"int_type", "float_type", "bool_type"}


class ParamsError(StageError):
    """params.yaml is missing, unreadable, or has a bad key. Where one key is at fault, `key`
    names it and `problem` says what is wrong with its value, so that a caller who set it
    (an override) can say so in its own words."""

    def __init__(self, message: str, key: str | None = None, problem: str | None = None):
        super().__init__(message)
        self.key, self.problem = key, problem


def _dotted(loc: tuple) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


# pydantic's name for a member of a union type in an error's location ("literal['auto']",
# "constrained-int"), which is no key of the file.
_MEMBER = re.compile(r"[\[\]()\-]|^(int|float|str|bool|none|list|dict)$")


def _field(error: dict) -> tuple:
    """An error's location up to the key, without the union member pydantic appends to a
    value's error (an unknown or missing key's location is the key itself: `batch-size`)."""
    parts = list(error["loc"])
    if error["type"] in ("extra_forbidden", "missing"):
        return tuple(parts)
    while parts and isinstance(parts[-1], str) and _MEMBER.search(parts[-1]):
        parts.pop()
    return tuple(parts)


def _quoted(kind: str, value: str) -> bool:
    """Whether a string is a number or boolean in quotes: "128", "1e-3", "true"."""
    if kind == "bool_type":
        return value.strip().lower() in {"true", "false"}
    try:
        (int if kind == "int_type" else float)(value)
    except ValueError:
        return False
    return True


def invalid(err: ValidationError, source: Path | str) -> ParamsError:
    """The error for a params mapping that failed validation, naming its first problem.

    An unknown key comes first: a misspelt key is also reported missing under its real
    name, and "unknown key 'train.epoch'; did you mean 'train.epochs'?" is what helps.
    """
    errors = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")
    first = errors[0]
    key = _dotted(_field(first))
    # A union ("auto" or a number) fails once per member: one problem, said once.
    members = [e for e in errors if _field(e) == _field(first) and e["loc"] != _field(e)]
    meant = _meant(errors)
    # A misspelling and the key it leaves missing are one problem.
    count = len({_field(e) for e in errors}) - len(meant)
    if first["type"] == "extra_forbidden":
        if first["loc"] in meant:
            text = f"unknown key '{key}'; did you mean '{_dotted(meant[first['loc']])}'? rename it"
        else:
            text = f"unknown key '{key}'; remove it or correct its spelling"
        return ParamsError(f"{source}: {text}{_more(count)}", key)
    if first["type"] == "missing":
        return ParamsError(f"{source}: missing key '{key}'; add it (docs/params.md lists every param){_more(count)}",
                           key)
    problem = first["msg"].removeprefix("Value error, ")
    if len(members) > 1:
        problem = " or ".join([problem] + [e["msg"].removeprefix("Input should be ") for e in members[1:]])
    if not isinstance(first["input"], dict):  # not a section's own check
        problem += f" (got {first['input']!r})"
    quoted = first["type"] in _TYPES and isinstance(first["input"], str) and _quoted(first["type"], first["input"])
    fix = "write it without quotes" if quoted else "correct it"
    return ParamsError(f"{source}: key '{key}': {problem}; {fix}{_more(count)}", key, problem)


def _meant(errors: list[dict]) -> dict[tuple, tuple]:
    """Each unknown key's location -> the missing key beside it that it most likely misspells."""
    missing = {e["loc"] for e in errors if e["type"] == "missing"}
    meant = {}
    for e in errors:
        if e["type"] != "extra_forbidden":
            continue
        parent = e["loc"][:-1]
        names = [str(m[-1]) for m in missing if m[:-1] == parent]
        close = difflib.get_close_matches(str(e["loc"][-1]), names, n=1)
        if close:
            meant[e["loc"]] = (*parent, close[0])
            missing.discard((*parent, close[0]))
    return meant


def _more(count: int) -> str:
    return f" ({count - 1} more problem(s) after this one)" if count > 1 else ""


def unreadable(err: YAMLError, path: Path) -> ParamsError:
    """The error for a params file that is not YAML, with the line and what the parser found
    (a duplicate key, an unclosed bracket)."""
    where = getattr(err, "problem_mark", None)
    line = f" line {where.line + 1}" if where else ""
    # ruamel's own words, first line only: "found duplicate key "epochs" with value "5" (original value: "1")".
    problem = (getattr(err, "problem", None) or "").splitlines()
    found = f" ({problem[0].strip()})" if problem and problem[0].strip() else ""
    return ParamsError(f"{path}:{line} is not valid YAML{found}; fix the syntax")
