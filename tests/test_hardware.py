import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from hotdog.core.errors import StageError
from hotdog.model.hardware import (
    autocast,
    configure_backends,
    cpu_flags,
    cpu_has_bf16,
    device_starting,
    pick_device,
    pick_precision,
    seed_everything,
)

pytestmark = pytest.mark.numeric  # rerun under AVX2 caps by make test

# /proc/cpuinfo of the three CPU kinds these machines have had. The Zen 3 file is a copy of
# a session machine's (2026-11-29); the other two carry the flags Linux reports for an AMX
# Xeon (Sapphire Rapids) and a Zen 4 EPYC (Genoa) under KVM.
CPUINFO = Path(__file__).with_name("cpuinfo")


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


def test_flags_come_from_the_flags_line_only(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("model name\t: amx_bf16 in a name\nflags\t\t: fpu avx2\nbugs\t\t: avx512_bf16\n")
    assert cpu_flags(info) == {"fpu", "avx2"} and not cpu_has_bf16(info)
    assert cpu_flags(tmp_path / "absent") == set()


@pytest.mark.parametrize(("cpu", "expected"), [("amd-epyc-zen3", "fp32"), ("amd-epyc-zen4", "bf16"),
                                               ("intel-xeon-amx", "bf16")])
def test_auto_precision_on_each_cpu_kind(cpu, expected):
    # A Zen 3 (AVX2 only) emulates bf16 at 0.7 img/s against fp32's 8 to 9: auto must be fp32.
    cpuinfo = CPUINFO / f"{cpu}.txt"
    assert pick_precision("auto", torch.device("cpu"), cpuinfo) == expected
    for asked in ("fp32", "bf16"):  # an explicit choice is never second-guessed
        assert pick_precision(asked, torch.device("cpu"), cpuinfo) == asked


def test_autocast_runs_matmuls_in_bf16_only_when_asked():
    x = torch.randn(4, 4)
    with autocast(torch.device("cpu"), "bf16"):
        assert (x @ x).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), "fp32"):
        assert (x @ x).dtype == torch.float32


# A channels_last convolution, as training runs it: it goes through oneDNN, which then
# names the ISA it dispatches to (ONEDNN_VERBOSE). A contiguous one does not reach oneDNN.
PROBE = """import torch
cl = torch.channels_last
torch.nn.Conv2d(3, 8, 3).to(memory_format=cl)(torch.randn(2, 3, 16, 16).contiguous(memory_format=cl))
print("aten", torch.backends.cpu.get_cpu_capability())"""
AVX2_CAPS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def isa_in_effect(env: dict) -> tuple[str, str]:
    """(ATen's CPU capability, oneDNN's ISA) in a fresh Python with `env`."""
    run = subprocess.run([sys.executable, "-c", PROBE], env={**env, "ONEDNN_VERBOSE": "1"},
                         capture_output=True, text=True, check=True)
    return re.search(r"^aten (\w+)$", run.stdout, re.M)[1], re.search(r",isa:([^,\n]+)", run.stdout)[1]


def test_the_avx2_caps_take_effect():
    # make test reruns the numeric tests under these caps, so that a green run on an AMX
    # or AVX-512 machine also means green on an AVX2-only one; they must really apply.
    aten, onednn = isa_in_effect({**os.environ, **AVX2_CAPS})
    assert aten == "AVX2" and onednn == "Intel AVX2"


ONEDNN_NAMES = {"AVX2": "Intel AVX2", "SSE41": "Intel SSE4.1"}  # ONEDNN_MAX_CPU_ISA -> its log name


def test_this_run_uses_the_isa_it_was_asked_for():
    # make test's later lanes set the caps in the environment (Makefile); its first sets
    # none, and then both libraries must use at least AVX2, which every machine here has.
    aten, onednn = isa_in_effect(dict(os.environ))
    assert torch.backends.cpu.get_cpu_capability() == aten  # this process, as the fresh one
    asked = os.environ.get("ATEN_CPU_CAPABILITY")
    assert aten == asked.upper() if asked else aten in ("AVX2", "AVX512")
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA")
    # AVX10 and AMX (a Xeon with AMX names its ISA "Intel AVX10.1 and Intel AMX ...") come above AVX-512.
    assert onednn == ONEDNN_NAMES[cap] if cap else any(isa in onednn for isa in ("AVX2", "AVX-512", "AVX10", "AMX"))


def test_a_cuda_run_is_set_up_as_torchs_reproducibility_notes_ask(monkeypatch):
    # cuDNN's autotuner made two identical H200 runs differ (benchmarks/RESULTS.md). After a
    # training run's set-up (hotdog.training.train: seed, then the backends), torch must be
    # as its "Reproducibility" notes ask for repeatable CUDA runs, whatever a library set
    # before: no autotuner, deterministic algorithms, and a fixed cuBLAS workspace.
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")  # unset, and set back as it was afterwards
    try:
        torch.use_deterministic_algorithms(False)
        seed_everything(0)
        configure_backends(torch.device("cuda"))
        assert torch.backends.cudnn.benchmark is False
        assert torch.are_deterministic_algorithms_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] in (":4096:8", ":16:8")  # the notes' two values
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def test_seeding_asks_for_deterministic_kernels_as_the_public_call_does():
    # seed_everything sets ATen's switch directly, without torch.use_deterministic_algorithms
    # and the torch.compile config it imports (with torch._dynamo).
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        torch.use_deterministic_algorithms(False)
        seed_everything(3)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.initial_seed() == 3
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def test_the_device_starts_in_a_thread_beside_the_body_and_is_waited_for():
    # The training stages and evaluate start CUDA this way while they read their inputs.
    seen = []

    def which() -> torch.device:
        time.sleep(0.2)  # longer than the body: the end of the block must wait for it
        seen.append(threading.current_thread().name)
        return torch.device("cpu")

    with device_starting(which):
        assert seen == []  # the body runs meanwhile
    assert seen == ["device-start"]
    assert "device-start" not in [t.name for t in threading.enumerate()]

    def broken() -> torch.device:
        raise StageError("train.device is 'cuda' but torch sees no CUDA device")

    with device_starting(broken):  # the stage meets this error where it first uses the device
        body_ran = True
    assert body_ran
