"""torchvision, imported without torch._dynamo. The project's modules take torchvision's names
from here, never from torchvision itself.

`import torchvision` imports torch._dynamo (2 s or more on a 2-core CPU, as long as torch
itself) for two names that matter only to torch.compile, which this project never uses:
ops/roi_align.py imports torch._dynamo.utils.is_compile_supported, and tv_tensors decorates
`wrap` with torch.compiler.disable. During the import both get stand-ins that do the real
thing when first called: neither is called here (no roi_align, no TVTensors), so dynamo never
loads, and if one ever is, it loads then.
"""

from __future__ import annotations

import functools
import sys
import types
from typing import Any, Callable

import torch

DYNAMO_UTILS = "torch._dynamo.utils"


def _is_compile_supported(device_type: Any) -> Any:
    """torch._dynamo.utils.is_compile_supported, imported when first called."""
    from torch._dynamo.utils import is_compile_supported

    return is_compile_supported(device_type)


def _disable_when_called(fn: Callable | None = None, recursive: bool = True, *, reason: str | None = None) -> Any:
    """torch.compiler.disable(fn), done when `fn` is first called rather than when decorated."""
    if fn is None:
        return functools.partial(_disable_when_called, recursive=recursive, reason=reason)
    disabled = None

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        nonlocal disabled
        if disabled is None:
            disabled = torch.compiler.disable(fn, recursive, reason=reason)
        return disabled(*args, **kwargs)

    return call


def _import_torchvision() -> None:
    """Import the parts of torchvision used here with the two stand-ins in place, then remove them."""
    if "torch._dynamo" in sys.modules:
        return  # loaded anyway: nothing to save
    utils = types.ModuleType(DYNAMO_UTILS)
    utils.is_compile_supported = _is_compile_supported
    # In sys.modules, the stand-in is found without its package torch._dynamo being imported.
    sys.modules[DYNAMO_UTILS] = utils
    disable, torch.compiler.disable = torch.compiler.disable, _disable_when_called
    try:
        import torchvision.models  # noqa: F401
        import torchvision.transforms.v2.functional  # noqa: F401  (it imports tv_tensors)
    finally:
        torch.compiler.disable = disable
        if sys.modules.get(DYNAMO_UTILS) is utils:
            del sys.modules[DYNAMO_UTILS]


_import_torchvision()

from torchvision.models import resnet18  # noqa: E402
from torchvision.transforms.v2 import functional  # noqa: E402

__all__ = ["functional", "resnet18"]
