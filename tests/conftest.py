"""Shared fixtures: a shrunk params file and synthetic data sets, all offline."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from synthetic import dataset_files, write_tree

REPO = Path(__file__).resolve().parents[1]

# The shrunk config every training test starts from (lightning-hydra-template's idea):
# 32 px, 1 epoch, tiny batches, CPU, fp32 unless a test asks otherwise.
TINY = {
    "train.epochs": 1,
    "train.batch_size": 4,
    "train.image_size": 32,
    "train.device": "cpu",
    "train.num_workers": 0,
    "manifest.max_reject_fraction": 0.2,
}


def repo_params() -> dict:
    """The repo's params.yaml as plain data."""
    return YAML(typ="safe").load((REPO / "params.yaml").read_text())


def with_overrides(params: dict, overrides: dict) -> dict:
    """A copy of params with dotted keys ("train.epochs") set."""
    params = copy.deepcopy(params)
    for dotted, value in overrides.items():
        *parents, last = dotted.split(".")
        node = params
        for key in parents:
            node = node[key]
        node[last] = value
    return params


def write_params(dest: Path, overrides: dict | None = None) -> Path:
    """Write a params.yaml at dest: the repo's, shrunk by TINY, then `overrides`."""
    params = with_overrides(repo_params(), {**TINY, **(overrides or {})})
    YAML().dump(params, dest)
    return dest


@pytest.fixture
def tiny_project(tmp_path, monkeypatch) -> Path:
    """A folder with a tiny params.yaml and an extracted synthetic data set; cwd is it."""
    write_params(tmp_path / "params.yaml")
    write_tree(tmp_path / "data", dataset_files({"train": 6, "test": 4}, corrupt=1))
    monkeypatch.chdir(tmp_path)
    return tmp_path
