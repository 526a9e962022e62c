import pytest
import torch

from stages.errors import StageError
from stages.hardware import autocast, cpu_has_bf16, pick_device, pick_precision


def test_cpu_bf16_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("flags\t\t: fpu sse2 avx512f avx512_bf16\n")
    assert cpu_has_bf16(info)
    info.write_text("flags\t\t: fpu sse2 amx_bf16 amx_tile\n")
    assert cpu_has_bf16(info)
    info.write_text("flags\t\t: fpu sse2 avx2 avx512f\n")
    assert not cpu_has_bf16(info)
    assert not cpu_has_bf16(tmp_path / "absent")


def test_auto_device_and_explicit_cuda():
    assert pick_device("cpu") == torch.device("cpu")
    if torch.cuda.is_available():
        assert pick_device("auto").type == "cuda" and pick_device("cuda").type == "cuda"
    else:
        assert pick_device("auto").type == "cpu"
        with pytest.raises(StageError, match="train.device is 'cuda' but torch sees no CUDA device"):
            pick_device("cuda")


def test_precision_choice():
    cpu = torch.device("cpu")
    assert pick_precision("fp32", cpu) == "fp32" and pick_precision("bf16", cpu) == "bf16"
    assert pick_precision("auto", cpu) == ("bf16" if cpu_has_bf16() else "fp32")


def test_autocast_runs_matmuls_in_bf16_only_when_asked():
    x = torch.randn(4, 4)
    with autocast(torch.device("cpu"), "bf16"):
        assert (x @ x).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), "fp32"):
        assert (x @ x).dtype == torch.float32
