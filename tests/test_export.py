"""The export stage: ONNX and TorchScript files that answer as the checkpoint does, carry
their metadata, take any batch size, and are never written when they stray."""

import io
import json
import warnings

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from hotdog.core.errors import StageError
from hotdog.core.names import CLASSES, RUNS
from hotdog.core.params import load_params
from hotdog.model import export
from hotdog.model.checkpoint import save_checkpoint
from hotdog.model.inference import Trained
from hotdog.model.resnet import build_model
from hotdog.serving import predict

SIZE = 32


def trained(classes=("ant", "bee", "cat"), seed=0) -> Trained:
    torch.manual_seed(seed)
    return Trained(build_model(None, "default", classes).eval(), {"seed": seed, "train": {"image_size": SIZE}},
                   tuple(classes))


def views(n=7, seed=1) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, SIZE, SIZE), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.numeric  # rerun under AVX2 caps by make test: parity must hold for every ISA
def test_both_exports_answer_as_the_checkpoint_and_say_what_they_are(tmp_path):
    model = trained()
    found = export.export_checked("finetune", model, views(), model.classes, SIZE, "f" * 40,
                                  tmp_path / "m.onnx", tmp_path / "m.pt")
    assert found["onnx"]["max_abs_diff"] <= 1e-4 and found["torchscript"]["max_abs_diff"] <= 1e-4
    assert found["onnx"]["images"] == 7 and found["opset"] == export.OPSET
    meta = export.onnx_metadata(tmp_path / "m.onnx")
    assert json.loads(meta["classes"]) == ["ant", "bee", "cat"] and meta["image_size"] == str(SIZE)
    assert json.loads(meta["params"]) == {"seed": 0, "train": {"image_size": SIZE}} and meta["data_sha1"] == "f" * 40
    assert json.loads(meta["normalisation"])["mean"] == [0.485, 0.456, 0.406]
    # Any batch size: one image, and more than the example the exporter saw.
    session = export.onnx_session(tmp_path / "m.onnx")
    reference = export.torch_probabilities(model.module, views(11, seed=3))
    for n in (1, 11):
        got = export.onnx_probabilities(session, views(11, seed=3)[:n].numpy(), batch_size=n)
        assert np.abs(got - reference[:n]).max() <= 1e-4 and got.sum(1) == pytest.approx(np.ones(n), abs=1e-5)
    extra = {"hotdog.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation note
        torch.jit.load(str(tmp_path / "m.pt"), _extra_files=extra)
    assert json.loads(extra["hotdog.json"]) == meta


@pytest.mark.numeric
def test_the_input_the_metadata_describes_is_the_test_view():
    # A caller outside the project has only the metadata's words: each of its steps, done with
    # PIL and torchvision here, must give the evaluate stage's view, pixel for pixel. A photo
    # that is not square shows a step left out: without the squash, the crop is another one.
    text = export.metadata("finetune", ["a", "b"], 32, {}, "f" * 40)["input"]
    assert text.startswith("uint8 RGB NCHW, 32x32; any batch size. From a photo: turn it upright")
    assert "resize its shorter side to 37 px" in text and "resize that to 37x37" in text
    assert text.endswith("then centre-crop 32x32")
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (30, 70, 3), dtype=np.uint8), "RGB")  # 70 wide, 30 high
    encoded = io.BytesIO()
    photo.save(encoded, "PNG")
    shorter = TF.pil_to_tensor(photo.resize((int(37 * 70 / 30), 37), Image.BILINEAR))
    described = TF.center_crop(TF.resize(shorter, [37, 37], antialias=True), [32, 32])
    assert torch.equal(described, predict.test_view(encoded.getvalue(), 32))
    assert not torch.equal(TF.center_crop(shorter, [32, 32]), described)


def test_the_torchscript_file_holds_no_device_of_its_own(tmp_path):
    # Traced, a constant made in forward is frozen to the device of the trace: the file then
    # fails on a GPU. The normalisation is in buffers instead, which `.to(device)` moves.
    model = trained()
    export.to_torchscript(model.module, SIZE, {}, tmp_path / "m.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation note
        module = torch.jit.load(str(tmp_path / "m.pt"))
    assert not [line for line in str(module.inlined_graph).splitlines() if 'Constant[value="cpu"]' in line]
    assert {"mean", "std"} <= set(module.state_dict())
    with torch.inference_mode():
        assert torch.equal(module(views()), torch.from_numpy(export.torch_probabilities(model.module, views())))


def test_a_gap_past_the_tolerance_is_one_line():
    found = export.gap(np.array([[0.55, 0.45]]), np.array([[0.45, 0.55]]))
    assert found == {"max_abs_diff": pytest.approx(0.1), "argmax_changes": 1, "images": 1}
    with pytest.raises(StageError, match=r"^the ONNX export of scratch differs from its checkpoint by up to 1.00e-01 "
                                         r"in a probability \(more than 0.0001\) on 1 test views; nothing was "
                                         r"written"):
        export.check_parity("scratch", "ONNX", found)
    export.check_parity("scratch", "ONNX", export.gap(np.array([[0.5, 0.5]]), np.array([[0.50005, 0.49995]])))


def test_exports_are_checked_on_an_even_spread_of_at_most_parity_views():
    few = views(5)
    assert export.parity_views(few) is few  # all of them when there are few
    many = torch.arange(300, dtype=torch.uint8).repeat_interleave(3 * SIZE * SIZE).view(300, 3, SIZE, SIZE)
    picked = export.parity_views(many)
    ids = picked[:, 0, 0, 0].tolist()  # each view's own number (mod 256)
    assert len(ids) == export.PARITY_VIEWS == 32 and ids[0] == 0 and ids[-1] == 299 % 256
    positions = torch.linspace(0, 299, 32).round().long().tolist()
    assert ids == [p % 256 for p in positions] and len(set(positions)) == 32  # evenly spread, none twice


def test_a_model_of_other_classes_is_refused(tmp_path):
    with pytest.raises(StageError, match=r"trained on the classes ant, bee, cat, but the test split holds hotdog, "
                                         r"not-hotdog; run `dvc repro finetune`"):
        export.export_checked("finetune", trained(), views(), CLASSES, SIZE, "f" * 40, tmp_path / "a", tmp_path / "b")


def test_the_stage_writes_every_file_or_none(decoded_project, monkeypatch):
    from stages import export as export_stage

    p = load_params(*export_stage.PARAMS)
    p.paths.zip.parent.mkdir(parents=True, exist_ok=True)
    p.paths.zip.write_bytes(b"the data set's zip")  # its digest goes into each file's metadata
    for i, run in enumerate(RUNS):
        model = trained(CLASSES, seed=i)
        save_checkpoint(p.paths.checkpoint(run), model.module.state_dict(), run, model.params, {}, CLASSES)
    real = export.onnx_probabilities
    calls = []

    def drifting(session, views, batch_size=64):  # the second model's ONNX file strays
        calls.append(1)
        return real(session, views, batch_size) + (1e-3 if len(calls) == 2 else 0.0)

    monkeypatch.setattr(export, "onnx_probabilities", drifting)
    with pytest.raises(StageError, match="the ONNX export of scratch differs from its checkpoint"):
        export_stage.main()
    files = [p.paths.onnx(r) for r in RUNS] + [p.paths.torchscript(r) for r in RUNS] + [p.paths.export_summary]
    assert not any(f.exists() for f in files) and not list(p.paths.models.glob(".*tmp*"))
    monkeypatch.setattr(export, "onnx_probabilities", real)
    export_stage.main()
    summary = json.loads(p.paths.export_summary.read_text())
    assert all(f.exists() for f in files) and set(summary) == set(RUNS)
    assert all(summary[r][fmt]["max_abs_diff"] <= 1e-4 for r in RUNS for fmt in ("onnx", "torchscript"))


def test_predict_answers_with_the_onnx_file_as_with_the_checkpoint(tmp_path, capsys):
    from synthetic import class_files, write_tree

    model = trained()
    params = {"seed": 0, "train": {"image_size": SIZE}}
    save_checkpoint(tmp_path / "m.pt", model.module.state_dict(), "finetune", params, {}, model.classes)
    export.to_onnx(model.module, SIZE, export.metadata("finetune", model.classes, SIZE, params, "f" * 40),
                   tmp_path / "m.onnx")
    write_tree(tmp_path, class_files(("x", "y"), 3, top="photos", size=(50, 40)))
    photos = sorted(str(p) for p in (tmp_path / "photos").rglob("*.png"))
    device = torch.device("cpu")
    both = [predict.load_model(str(tmp_path / name), device) for name in ("m.pt", "m.onnx")]
    assert both[1].session is not None and both[1].module is None
    assert (both[1].classes, both[1].image_size) == (("ant", "bee", "cat"), SIZE)
    answers = list(predict.score(both, iter(photos), device, "fp32"))
    pt, onnx = answers[0::2], answers[1::2]
    assert [a.source for a in pt] == [a.source for a in onnx] == photos
    for a, b in zip(pt, onnx):
        assert a.predicted == b.predicted and np.abs(np.array(a.probabilities) - b.probabilities).max() <= 1e-4

    predict.main([photos[0], "--model", str(tmp_path / "m.onnx"), "--json", "--top-k", "3"])
    line = json.loads(capsys.readouterr().out.splitlines()[0])
    assert line["model"] == str(tmp_path / "m.onnx") and set(line["probabilities"]) == {"ant", "bee", "cat"}
    (tmp_path / "foreign.onnx").write_bytes(b"not a model")
    with pytest.raises(StageError, match=r"foreign.onnx is not an ONNX model with hotdog's metadata"):
        predict.load_model(str(tmp_path / "foreign.onnx"), device)
