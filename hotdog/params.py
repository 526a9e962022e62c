"""Typed params: params.yaml is read and validated here, and nowhere else.

A stage calls `load_params(*keys)` with the keys dvc.yaml declares for it (whole sections
or dotted keys) and can read only those, plus `paths` and `runtime`. A bad key is one line
naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from ruamel.yaml import YAML, YAMLError

from hotdog.errors import StageError
from hotdog.files import atomic_path

PARAMS_FILE = Path("params.yaml")
SPLITS = ("train", "test")
# Label order is ImageFolder's (sorted folder names), so label 0 is hotdog, as in the seed.
CLASSES = ("hotdog", "not-hotdog")
RUNS = ("finetune", "scratch")


class ParamsError(StageError):
    """params.yaml is missing, unreadable, or has a bad key."""


class Section(BaseModel):
    # strict: "128" is not 128 and 1 is not true; extra="forbid": typos are errors.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _hex(value: str, lengths: range, what: str) -> str:
    value = value.lower()
    if len(value) not in lengths or any(c not in "0123456789abcdef" for c in value):
        raise ValueError(f"expected {what} hex digits")
    return value


class DataParams(Section):
    url: str = Field(min_length=1)
    sha1: str

    @field_validator("sha1")
    @classmethod
    def _sha1(cls, v: str) -> str:
        return _hex(v, range(40, 41), "40")


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
    # Training processes (hotdog.distributed): auto is every visible GPU, 1 on the CPU.
    devices: Literal["auto"] | Annotated[int, Field(ge=1)]


def eval_resize(image_size: int) -> int:
    """The side the seed's test transform squashes to: its 256 for a 224 crop, scaled. The
    decode stage resizes each image's shorter side to it."""
    return round(image_size * 256 / 224)


class RuntimeParams(Section):
    """Knobs that provably do not change results (tests show it); no stage declares them
    to DVC, so changing one re-runs nothing."""

    num_workers: int = Field(ge=0)
    # A killed training stage continues from its last finished epoch (hotdog.resume); the
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


class Paths(Section):
    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)  # str -> Path

    zip: Path
    weights: Path
    images: Path
    manifest: Path
    decoded: Path
    models: Path
    metrics: Path
    reports: Path
    # Answers for new photos from the hotdog-predict flow: no DVC output.
    scored: Path
    # Working state that is no DVC output: resumable training states and the run lock.
    state: Path

    def under(self, root: Path) -> Paths:
        """These paths, relative ones taken from `root` instead of the current directory."""
        return Paths(**{name: Path(root) / value for name, value in self})

    # Derived file names live here, once; tests/test_seams.py checks dvc.yaml agrees.
    def manifest_file(self, split: str) -> Path:
        return self.manifest / f"{split}.parquet"

    @property
    def rejects(self) -> Path:
        return self.manifest / "rejects.csv"

    @property
    def manifest_summary(self) -> Path:
        return self.metrics / "manifest.json"

    def decoded_file(self, split: str) -> Path:
        return self.decoded / f"{split}.arrow"

    def checkpoint(self, run: str) -> Path:
        return self.models / f"{run}.pt"

    def run_summary(self, run: str) -> Path:
        return self.metrics / f"{run}.json"

    def run_epochs(self, run: str) -> Path:
        return self.metrics / f"{run}_epochs.json"

    @property
    def evaluation(self) -> Path:
        return self.metrics / "evaluate.json"

    @property
    def predictions(self) -> Path:
        return self.metrics / "predictions.parquet"

    @property
    def report(self) -> Path:
        return self.reports / "report.md"

    @property
    def figures(self) -> Path:
        return self.reports / "figures"

    @property
    def experiments_report(self) -> Path:
        return self.reports / "experiments.md"

    @property
    def experiments_figure(self) -> Path:
        return self.reports / "experiments.png"

    @property
    def resume_states(self) -> Path:
        return self.state / "resume"

    @property
    def run_lock(self) -> Path:
        return self.state / "run.json"


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


def _describe(err: ValidationError, source: Path) -> str:
    """One line for the first validation error: which key, what is wrong, what to do."""
    errors = err.errors()
    first = errors[0]
    key = ".".join(str(part) for part in first["loc"]) or "(top level)"
    more = f" ({len(errors) - 1} more problem(s) after this one)" if len(errors) > 1 else ""
    if first["type"] == "extra_forbidden":
        return f"{source}: unknown key '{key}'; remove it or correct its spelling{more}"
    if first["type"] == "missing":
        return f"{source}: missing key '{key}'; add it (README lists every param){more}"
    msg = first["msg"].removeprefix("Value error, ")
    got = "" if isinstance(first["input"], dict) else f" (got {first['input']!r})"  # a section's own check
    return f"{source}: key '{key}': {msg}{got}; correct it{more}"


def parse_params(raw: Any, source: Path = PARAMS_FILE) -> Params:
    """Validate an already-parsed params mapping."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections at the top level")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(_describe(err, source)) from None


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
        where = getattr(err, "problem_mark", None)
        line = f" line {where.line + 1}" if where else ""
        raise ParamsError(f"{path}:{line} is not valid YAML; fix the syntax") from None
    return parse_params(raw, Path(path))


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
    parse_params(_plain(doc), path)
    return yaml, doc, changed


def _plain(node: Any) -> Any:
    """ruamel's round-trip containers as plain dicts, lists and scalars."""
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


class UndeclaredParam(RuntimeError):
    """A stage read a param it does not declare in dvc.yaml: a bug in the stage. Not an
    AttributeError on purpose, so that getattr(p, key, default) cannot hide it."""


class DeclaredKeys:
    """The keys of one section that a stage declared (`train.image_size`); reading any
    other raises UndeclaredParam, so DVC's params deps cannot silently fall short."""

    def __init__(self, section: str, values: Section, keys: set[str]):
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

    def __init__(self, params: Params, keys: tuple[str, ...]):
        self.paths, self.runtime = params.paths, params.runtime
        dotted: dict[str, set[str]] = {}
        for key in keys:
            section, _, name = key.partition(".")
            if section in ("paths", "runtime"):
                raise UndeclaredParam(f"{key}: every stage gets {section} without declaring it, and "
                                      f"it is no DVC param; remove it from the stage's params")
            if section not in Params.model_fields:
                raise UndeclaredParam(f"{key} is not a section of params.yaml")
            if name and name not in Params.model_fields[section].annotation.model_fields:
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


def load_params(*keys: str, path: Path = PARAMS_FILE) -> StageParams:
    """The keys a stage declares in dvc.yaml (sections, or dotted keys), plus paths and runtime.

    The whole file is validated, so a typo anywhere stops every stage, but a stage can
    only reach what it declared, which keeps DVC's params deps honest.
    """
    return StageParams(read_params(path), keys)
