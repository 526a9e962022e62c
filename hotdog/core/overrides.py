"""Setting dotted keys in params.yaml ("scratch.lr") the way DVC's `-S` does, keeping the
file's comments and key order; every change is validated before anything is written."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

from ruamel.yaml import YAML, YAMLError

from hotdog.core.files import atomic_path
from hotdog.core.params import PARAMS_FILE, Params, ParamsError, parse_params


def parse_pairs(pairs: Sequence[str], flag: str) -> dict[str, Any]:
    """`key=value` pairs from a command line (`flag` is how it gives them: `-S`, `--set`),
    each value read as YAML, as DVC reads `-S`; a ParamsError names one that is not a pair,
    or whose value is not YAML."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ParamsError(f"{flag} {pair!r}: expected key=value, e.g. {flag} train.epochs=1")
        try:
            out[key] = YAML(typ="safe", pure=True).load(value)
        except YAMLError as err:  # an unclosed [ or {, a stray tab: ruamel's message runs over lines
            problem = getattr(err, "problem", None) or type(err).__name__
            raise ParamsError(f"{flag} {pair!r}: the value is not valid YAML ({problem}); quote a string, e.g. "
                              f"{flag} '{key}=\"{value}\"'") from None
    return out


def set_param(key: str, value: Any) -> str:
    """`key=value` for `dvc exp run -S`, which reads Hydra's override grammar: a string is
    quoted, so that DVC takes it as it is (a path with spaces, brackets or `~`, a URL with
    `?` and `&`, a SHA-256 prefix of digits alone, which it would make a number), and a list
    is a list, not a grid."""
    return f"{key}={_hydra(value)}"


def _hydra(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ",".join(_hydra(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    # Hydra's quoted strings: backslashes are doubled only before a quote, ${ or the end, a
    # quote is \', and ${ would be OmegaConf's interpolation unless it is \${.
    text = re.sub(r"(\\+)(?='|$|\$\{)", lambda m: m.group(1) * 2, str(value))
    return "'" + text.replace("'", "\\'").replace("${", "\\${") + "'"


def apply_overrides(overrides: dict[str, Any], path: Path = PARAMS_FILE) -> dict[str, tuple[Any, Any]]:
    """Set dotted keys ("scratch.lr") in the params file, keeping its comments.

    Validates the result first: an unknown key or a bad value is a ParamsError and the
    file is left as it was. Returns {key: (old, new)} for the values that changed.
    """
    yaml, doc, changed = _overridden(overrides, Path(path))
    if changed:
        with atomic_path(Path(path)) as tmp, tmp.open("w") as f:
            yaml.dump(doc, f)
    return changed


def check_overrides(overrides: dict[str, Any], path: Path = PARAMS_FILE) -> Params:
    """The params the file would hold with `overrides` set; a ParamsError names a bad one.
    Writes nothing."""
    _, doc, _ = _overridden(overrides, Path(path))
    return parse_params(_plain(doc), Path(path))


def _overridden(overrides: dict[str, Any], path: Path) -> tuple[YAML, Any, dict[str, tuple[Any, Any]]]:
    """(the round-trip loader, the file's document with `overrides` set, what changed), checked."""
    yaml = YAML()  # round-trip: comments and key order survive
    doc = yaml.load(path.read_text())
    changed = {}
    for dotted, value in overrides.items():
        *parents, last = dotted.split(".")
        node = doc
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict) or last not in node or isinstance(node[last], dict):
            raise ParamsError(f"{path}: unknown key '{dotted}' in the overrides; use a key that params.yaml has")
        if node[last] != value:
            changed[dotted] = (node[last], value)
            node[last] = value
    try:
        parse_params(_plain(doc), path)
    except ParamsError as err:
        # The override the problem is in (train.devices for "train.devices", data.classes for
        # "data.classes.0", scratch.head_init for the section check of "scratch"), if any.
        matches = [k for k in overrides if err.key is not None and (
            err.key == k or err.key.startswith(f"{k}.") or k.startswith(f"{err.key}."))]
        if len(matches) != 1 or err.problem is None:  # none, or several under a section's check
            raise
        key = matches[0]
        # The value came from a command line or a flow's parameters, not from the file.
        raise ParamsError(f"{key}={overrides[key]!r}, an override: {err.problem}; give another value "
                          f"({path} is unchanged)", key, err.problem) from None
    return yaml, doc, changed


def _plain(node: Any) -> Any:
    """ruamel's round-trip containers as plain dicts, lists and scalars."""
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node
