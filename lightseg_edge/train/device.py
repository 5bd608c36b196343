"""Where and in what precision training runs: the device, autocast, and a guard against a oneDNN bf16 bug."""

from __future__ import annotations

import contextlib

import torch

from ..errors import LightsegError
from ..types import TrainPrecision


def resolve_device(name: str) -> torch.device:
    """"auto" is CUDA when PyTorch sees a GPU, else CPU; an explicit CUDA device that is absent is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise LightsegError(f"--device: expected auto, cpu, cuda or cuda:N, got {name!r}") from exc
    if dev.type not in ("cpu", "cuda"):  # torch knows mps, xpu, meta...: none is supported (or present) here
        raise LightsegError(f"--device {name}: expected auto, cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LightsegError(f"--device {name}: PyTorch sees no CUDA device here (torch {torch.__version__}); use --device cpu")
    return dev


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 in hardware (a CPU with AVX512-BF16 or AMX; a CUDA GPU of compute capability 8+)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(precision: TrainPrecision, device: torch.device) -> TrainPrecision:
    """``auto`` -> bf16 where ``device`` runs it natively, else fp32. An explicit bf16 is kept where it is emulated,
    with a note: on a CPU without bf16 instructions autocast converts every tensor in software, and a training step
    takes longer than in fp32 (1.9-2.5x for LMSAUnet on an AVX2 machine, ``benchmarks/train_speed.py``)."""
    precision = TrainPrecision(precision)
    native = precision in (TrainPrecision.AUTO, TrainPrecision.BF16) and native_bf16(device)
    if precision is TrainPrecision.AUTO:
        precision = TrainPrecision.BF16 if native else TrainPrecision.FP32
        print(f"precision: auto -> {precision.value} ({'native' if native else 'no native'} bf16 on this {device.type})", flush=True)
    elif precision is TrainPrecision.BF16 and not native:
        print(f"precision: bf16 is emulated on this {device.type} ({_capability(device)}), which makes training slower than "
              f"fp32; --precision auto picks fp32 here", flush=True)
    return precision


def _capability(device: torch.device) -> str:
    if device.type == "cuda":
        return "compute capability {}.{}".format(*torch.cuda.get_device_capability(device))
    return f"{torch.backends.cpu.get_cpu_capability()} without AVX512-BF16 or AMX"


def autocast(device: torch.device, precision: TrainPrecision):
    """The autocast context for ``precision`` on ``device`` (a no-op for fp32)."""
    precision = TrainPrecision(precision)
    if precision is TrainPrecision.FP32:
        return contextlib.nullcontext()
    if precision is TrainPrecision.FP16 and device.type != "cuda":
        raise LightsegError("--precision fp16: fp16 training needs a CUDA device; use bf16 on a CPU")
    dtype = torch.bfloat16 if precision is TrainPrecision.BF16 else torch.float16
    return torch.autocast(device.type, dtype=dtype)


class _Fp32Forward:
    """A module forward that runs in fp32 with autocast off (see ``keep_dilated_convs_fp32``)."""

    def __init__(self, forward) -> None:
        self.forward = forward

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", enabled=False):
            return self.forward(x.float())


def keep_dilated_convs_fp32(model: torch.nn.Module, device: torch.device, precision: TrainPrecision) -> torch.nn.Module:
    """Under bf16 autocast on CPU, dilated convolutions run in fp32: oneDNN's bf16 backward of them corrupts the heap
    on small feature maps (torch 2.13: EGE-UNet at 128x128 dies with SIGSEGV within a step). They are a few depthwise
    3x3s per model, so the cost is small; the weights are untouched."""
    if device.type == "cpu" and TrainPrecision(precision) is TrainPrecision.BF16:
        for mod in model.modules():
            if isinstance(mod, torch.nn.Conv2d) and max(mod.dilation) > 1:
                mod.forward = _Fp32Forward(mod.forward)
    return model
