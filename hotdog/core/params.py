"""Typed params: params.yaml is read and validated here, and nowhere else.

A stage calls `load_params(*keys)` with the keys dvc.yaml declares for it (whole sections
or dotted keys) and can read only those, plus `paths` and `runtime`. A bad key is one line
naming it, worded in hotdog.core.params_errors, which no stage depends on: rewording re-runs
nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from ruamel.yaml import YAML, YAMLError

from hotdog.core.declared import StageParams
from hotdog.core.params_errors import ParamsError, invalid, unreadable
from hotdog.core.paths import Paths

PARAMS_FILE = Path("params.yaml")


class Section(BaseModel):
    # strict: "128" is not 128 and 1 is not true; extra="forbid": typos are errors.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _hex(value: str, lengths: range, what: str) -> str:
    value = value.lower()
    if len(value) not in lengths or any(c not in "0123456789abcdef" for c in value):
        raise ValueError(f"expected {what} hex digits")
    return value


class DataParams(Section):
    # A zip (http(s)://, file:// or a path) or a local folder (hotdog.data.source).
    url: str = Field(min_length=1)
    # The zip's SHA-1; null for a folder, whose files the manifest's SHA-1s pin.
    sha1: str | None
    # The classes in label order, or a subset of them; null: every class folder, sorted.
    classes: list[Annotated[str, Field(min_length=1, pattern=r"^[^/\\]+$")]] | None
    # The share of each class the manifest stage puts in test when the data set is class
    # folders alone (hotdog.data.split); a data set with train/ and test/ keeps its split.
    test_fraction: float = Field(gt=0.0, lt=1.0)

    @field_validator("sha1")
    @classmethod
    def _sha1(cls, v: str | None) -> str | None:
        return None if v is None else _hex(v, range(40, 41), "40")


class WeightsParams(Section):
    url: str = Field(min_length=1)
    sha256: str

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, v: str) -> str:
        return _hex(v, range(8, 65), "8 to 64")


class ManifestParams(Section):
    max_reject_fraction: float = Field(ge=0.0, le=1.0)


class TrainParams(Section):
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    image_size: int = Field(ge=8)
    device: Literal["auto", "cpu", "cuda"]
    precision: Literal["auto", "fp32", "bf16"]
    weight_decay: float = Field(ge=0.0)
    augment: Literal["auto", "workers", "device"]
    # Training processes (hotdog.training.distributed): auto is every visible GPU, 1 on the CPU.
    devices: Literal["auto"] | Annotated[int, Field(ge=1)]


class RuntimeParams(Section):
    """Knobs that provably do not change results (tests show it); no stage declares them
    to DVC, so changing one re-runs nothing."""

    num_workers: int = Field(ge=0)
    # A killed training stage continues from its last finished epoch (hotdog.training.resume); the
    # final outputs equal an uninterrupted run's, which tests/test_resume.py shows.
    resume: bool
    # The download stage refuses an archive that says it unpacks to more than this.
    max_unpacked_gib: float = Field(gt=0.0)


class RunParams(Section):
    lr: float = Field(gt=0.0)
    head_lr_mult: float = Field(gt=0.0)
    pretrained: bool
    head_init: Literal["xavier", "default", "imagenet-hotdog"]
    freeze_body: bool

    @model_validator(mode="after")
    def _imagenet_head_needs_the_weights(self) -> RunParams:
        if self.head_init == "imagenet-hotdog" and not self.pretrained:
            raise ValueError("head_init imagenet-hotdog starts fc from the ImageNet classifier, "
                             "which comes with the ImageNet weights: set pretrained to true")
        return self


class Params(Section):
    seed: int = Field(ge=0)
    data: DataParams
    weights: WeightsParams
    manifest: ManifestParams
    train: TrainParams
    finetune: RunParams
    scratch: RunParams
    runtime: RuntimeParams
    paths: Paths


def parse_params(raw: Any, source: Path = PARAMS_FILE) -> Params:
    """Validate an already-parsed params mapping."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections at the top level")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise invalid(err, source) from None


def read_params(path: Path = PARAMS_FILE) -> Params:
    """Read and validate the whole params file."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ParamsError(f"{path} not found; run from the repo root") from None
    try:
        # ruamel reads YAML 1.2 as DVC writes it: `dvc exp run -S lr=5e-5` gives a float.
        raw = YAML(typ="safe", pure=True).load(text)
    except YAMLError as err:
        raise unreadable(err, Path(path)) from None
    return parse_params(raw, Path(path))


def load_params(*keys: str, path: Path = PARAMS_FILE) -> StageParams:
    """The keys a stage declares in dvc.yaml (sections, or dotted keys), plus paths and runtime.

    The whole file is validated, so a typo anywhere stops every stage, but a stage can
    only reach what it declared, which keeps DVC's params deps honest.
    """
    return StageParams(read_params(path), keys)
