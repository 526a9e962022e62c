"""Every file the pipeline reads or writes, derived from params.yaml's `paths:` section, once.

tests/test_seams.py checks that dvc.yaml declares the same outputs as the stages write.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict


class Paths(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)  # str -> Path

    # What the source stage found at data.url (hotdog.data.source): the download stage's dep.
    source: Path
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

    def onnx(self, run: str) -> Path:
        return self.models / f"{run}.onnx"

    def torchscript(self, run: str) -> Path:
        return self.models / f"{run}.torchscript.pt"

    @property
    def export_summary(self) -> Path:
        return self.metrics / "export.json"

    def run_summary(self, run: str) -> Path:
        return self.metrics / f"{run}.json"

    def run_epochs(self, run: str) -> Path:
        return self.metrics / f"{run}_epochs.json"

    @property
    def evaluation(self) -> Path:
        return self.metrics / "evaluate.json"

    def confusion(self, run: str) -> Path:
        """Each test image's true and predicted class, for DVC's confusion template."""
        return self.metrics / f"confusion_{run}.csv"

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
