"""Device and precision choice (train.device, train.precision), made once per stage."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Callable, Iterator

import torch

from hotdog.core.errors import StageError

CPUINFO = Path("/proc/cpuinfo")
# Native bf16 matrix instructions: AVX512-BF16 (Zen 4, Cooper Lake on) or AMX (Sapphire Rapids on).
# Without them bf16 autocast is emulated: 0.7 img/s against fp32's 8 to 9 on a Zen 3.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: Path = CPUINFO) -> set[str]:
    """The feature flags of the first CPU in cpuinfo (empty when it cannot be read)."""
    try:
        lines = cpuinfo.read_text().splitlines()
    except OSError:
        return set()  # not Linux
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return set()


def cpu_has_bf16(cpuinfo: Path = CPUINFO) -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX512-BF16 or AMX)."""
    return not cpu_flags(cpuinfo).isdisjoint(BF16_FLAGS)


def cpu_model(cpuinfo: Path = CPUINFO) -> str:
    """The CPU's model name, as /proc/cpuinfo gives it ("unknown" elsewhere)."""
    try:
        return next(line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


def isa_summary(cpuinfo: Path = CPUINFO) -> str:
    """The flags that decide torch's CPU kernels here, for a figure's or a log's label."""
    return "/".join(f for f in ("avx2", "avx512f", *BF16_FLAGS) if f in cpu_flags(cpuinfo)) or "no AVX2"


def pick_device(name: str) -> torch.device:
    """auto -> CUDA when present, else CPU. Asking for cuda without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise StageError("train.device is 'cuda' but torch sees no CUDA device; set it to auto or cpu in params.yaml")
    return torch.device(name)


@contextlib.contextmanager
def device_starting(which: Callable[[], torch.device]) -> Iterator[None]:
    """Start the device `which()` names in a thread while the body runs, and wait for it at
    the end: on CUDA, the driver and a context, which a stage would otherwise start only
    after it has read its inputs (benchmarks/step.py times both ways). On the CPU there is
    nothing to start. The device and the results are the same either way."""

    def start() -> None:
        try:
            device = which()
            if device.type == "cuda":
                torch.zeros(1, device=device)  # the context and the caching allocator
        except Exception:  # noqa: BLE001  the first use of the device meets it again and says what is wrong
            pass

    thread = threading.Thread(target=start, name="device-start", daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join()


def pick_precision(name: str, device: torch.device, cpuinfo: Path = CPUINFO) -> str:
    """auto -> bf16 where the hardware runs it natively, else fp32."""
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_bf16(cpuinfo) else "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast for `precision == 'bf16'`; a no-op context for fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work: CUDA runs async, and a timer must time the work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def configure_backends(device: torch.device) -> None:
    """Backend switches that keep a run repeatable."""
    if device.type == "cuda":
        # cuDNN's autotuner stays off. On an H200 (benchmarks/RESULTS.md, 2026-11-30) it made
        # two identical runs differ in their first epoch's loss, even with deterministic
        # algorithms asked for, and its search cost 8 s of the first epoch; with it off runs
        # are bit-identical and the steady rate is the same (8,634 against 8,290 img/s).
        torch.backends.cudnn.benchmark = False


def seed_everything(seed: int) -> None:
    """Seed torch's global RNGs (weight init) and ask for deterministic kernels."""
    # cuBLAS is deterministic only with a fixed workspace; it reads this when it starts.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.manual_seed(seed)
    # warn_only: a few CUDA kernels have no deterministic version; run them anyway.
    # ATen's switch itself. torch.use_deterministic_algorithms also sets torch.compile's own
    # (torch._inductor.config), which this project never uses, and importing that imports
    # torch._dynamo and torch._inductor: 2 s or more on 2 cores. tests/test_hardware.py
    # checks that this sets what the public call sets.
    torch._C._set_deterministic_algorithms(True, warn_only=True)
