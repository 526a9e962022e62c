"""What a stage may read of the params: the keys it declares in dvc.yaml, plus `paths` and
`runtime`. Reading any other key is a bug in the stage, so DVC's params deps cannot silently
fall short."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class UndeclaredParam(RuntimeError):
    """A stage read a param it does not declare in dvc.yaml: a bug in the stage. Not an
    AttributeError on purpose, so that getattr(p, key, default) cannot hide it."""


class DeclaredKeys:
    """The keys of one section that a stage declared (`train.image_size`); reading any
    other raises UndeclaredParam, so DVC's params deps cannot silently fall short."""

    def __init__(self, section: str, values: BaseModel, keys: set[str]):
        self._section, self._values, self._keys = section, values, frozenset(keys)

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        if key not in self._keys:
            raise UndeclaredParam(f"{self._section}.{key} is read but not declared; "
                                  f"add it to the stage's params in dvc.yaml")
        return getattr(self._values, key)


class StageParams:
    """What a stage may read: its declared keys, `paths` and `runtime`."""

    def __init__(self, params: BaseModel, keys: tuple[str, ...]):
        fields = type(params).model_fields
        self.paths, self.runtime = params.paths, params.runtime
        dotted: dict[str, set[str]] = {}
        for key in keys:
            section, _, name = key.partition(".")
            if section in ("paths", "runtime"):
                raise UndeclaredParam(f"{key}: every stage gets {section} without declaring it, and "
                                      f"it is no DVC param; remove it from the stage's params")
            if section not in fields:
                raise UndeclaredParam(f"{key} is not a section of params.yaml")
            if name and name not in fields[section].annotation.model_fields:
                raise UndeclaredParam(f"{key} is not a key of params.yaml's {section} section")
            if name:
                dotted.setdefault(section, set()).add(name)
            else:
                setattr(self, section, getattr(params, section))
        for section, names in dotted.items():
            if section not in self.__dict__:  # a whole section wins over its dotted keys
                setattr(self, section, DeclaredKeys(section, getattr(params, section), names))

    def __getattr__(self, section: str) -> Any:
        if section.startswith("_"):
            raise AttributeError(section)
        raise UndeclaredParam(f"params section '{section}' is read but not declared; "
                              f"add it to the stage's params in dvc.yaml")
