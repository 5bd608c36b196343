"""Small value types shared by every layer. Plain Python: importable without numpy, torch or onnx."""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Optional, Tuple

from .errors import InvalidInputError


class Precision(str, Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


PRECISION_NAMES = tuple(p.value for p in Precision)  # ("fp32", "fp16", "int8"): CLI choices, manifest keys, bench order


class TrainPrecision(str, Enum):
    """The autocast dtype of a training run's forward pass (weights and optimiser stay fp32)."""

    FP32 = "fp32"
    BF16 = "bf16"  # autocast; on CPU only where the processor has native bf16 (AVX512-BF16, AMX)
    FP16 = "fp16"  # autocast + gradient scaling; CUDA only
    AUTO = "auto"  # a request, not a dtype: bf16 where the device runs it natively, else fp32 (train.device.resolve_precision)


class Runtime(str, Enum):
    PYTORCH = "pytorch"
    ONNXRUNTIME = "onnxruntime"
    TENSORRT = "tensorrt"
    OPENVINO = "openvino"
    LITERT = "litert"
    COREML = "coreml"


class DeployForm(str, Enum):
    """Which inference graph ``SegModel.deploy`` builds. Every form computes what the training form computes (up to
    fp32 round-off); they differ in the operators chosen, because the fastest graph depends on the runtime (measured:
    ``benchmarks/cpu_fast_path.py``). ``DEFAULT`` is the ONNX export's (ONNX Runtime, TensorRT and every target built
    from that ONNX); ``OPENVINO``, ``LITERT`` and ``COREML`` are converted for those runtimes where a model defines
    them."""

    DEFAULT = "default"
    OPENVINO = "openvino"
    LITERT = "litert"
    COREML = "coreml"


class TTA(str, Enum):
    """Test-time augmentation of a predictor (``load_predictor(..., tta=)``, ``--tta``): ``FLIPS`` runs the network on
    the input, its horizontal, vertical and double flip, flips each result back and averages the logits (4 passes).
    A lesion has no preferred orientation in a dermoscopy image, so the four views are equally valid inputs."""

    NONE = "none"
    FLIPS = "flips"


# Normalisation modes, by what the paper's released pipeline feeds its network.
NORMALIZE_MODES = ("minmax", "scale", "meanstd", "raw")
# The largest network input side accepted anywhere (--img-size, a manifest's or checkpoint's preprocessing): 16x the
# papers' 256. A float32 4096x4096x3 input is 200 MB; a typo such as 65536 would ask for 51 GB per image.
MAX_INPUT_SIDE = 4096
# Upper bounds where a typo would crash or swamp the machine instead of failing: OpenMP allocates every thread up front
# (100000000 threads abort in libgomp), each data-loader worker is a process, torch seeds are 64-bit (and the trainer
# derives per-epoch seeds from them), a batch is allocated whole (1024 x 3 x 256 x 256 float32 is 0.8 GB).
MAX_THREADS = 256
MAX_WORKERS = 64
MAX_SEED = 2 ** 32 - 1
MAX_BATCH = 1024


def _whole(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _three_numbers(value: object) -> bool:
    return (isinstance(value, (tuple, list)) and len(value) == 3
            and all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in value))


@dataclass(frozen=True)
class PreprocessConfig:
    """How an RGB uint8 image becomes the network input. Shared by training, calibration and every runtime.

    ``mode``:
      - ``minmax``: per-image min-max over all channels jointly to [0, 1] (UCM-Net's released pipeline);
      - ``scale``: divide by 255;
      - ``meanstd``: divide by 255, then subtract ``mean`` and divide by ``std`` per channel;
      - ``raw``: float 0..255 (EGE-UNet / MALUNet release).
    """

    size: Tuple[int, int] = (256, 256)  # (height, width)
    mode: str = "minmax"
    mean: Tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: Tuple[float, float, float] = (0.229, 0.224, 0.225)

    def __post_init__(self) -> None:
        # Checked here, once, so a manifest, checkpoint or option cannot smuggle in a size or constant that fails (or
        # allocates gigabytes) only when the first image is resized; values are normalised to int and float.
        if self.mode not in NORMALIZE_MODES:
            raise InvalidInputError(f"unknown normalisation mode {self.mode!r}; expected one of {NORMALIZE_MODES}")
        size = self.size
        if not (isinstance(size, (tuple, list)) and len(size) == 2 and all(_whole(v) and 1 <= v <= MAX_INPUT_SIDE for v in size)):
            raise InvalidInputError(f"size {size!r}: expected (height, width), two whole numbers in 1..{MAX_INPUT_SIDE}")
        for name in ("mean", "std"):
            if not _three_numbers(getattr(self, name)):
                raise InvalidInputError(f"{name} {getattr(self, name)!r}: expected three finite numbers, one per RGB channel")
        if 0 in self.std:
            raise InvalidInputError(f"std {self.std!r}: expected non-zero values (each channel is divided by its std)")
        object.__setattr__(self, "size", (int(size[0]), int(size[1])))
        for name in ("mean", "std"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))

    def to_dict(self) -> dict:
        return {"size": list(self.size), "mode": self.mode, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessConfig":
        return cls(size=tuple(d["size"]), mode=d["mode"], mean=tuple(d.get("mean", cls.mean)), std=tuple(d.get("std", cls.std)))


@dataclass(frozen=True)
class InputSpec:
    """The single input tensor of an exported model. ``None`` in ``shape`` marks a dynamic dimension."""

    name: str = "input"
    shape: Tuple[Optional[int], ...] = (1, 3, 256, 256)
    dtype: str = "float32"
    output_name: str = "logits"

    @property
    def hw(self) -> Tuple[int, int]:
        return (int(self.shape[2]), int(self.shape[3]))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "InputSpec":
        return cls(name=d["name"], shape=tuple(d["shape"]), dtype=d.get("dtype", "float32"), output_name=d.get("output_name", "logits"))


@dataclass(frozen=True)
class PaperClaims:
    """Efficiency figures as the paper states them, with where they come from.

    The ``*_why`` fields hold what was established about one claim (from the paper's released code and counting here):
    the benchmark's claim check (``lightseg_edge.bench.claims``) appends it to its verdict's reason, or, where the
    paper states no such figure, gives it in brackets as the reason why. Empty: nothing to add.
    """

    params: Optional[int] = None
    gmacs: Optional[float] = None  # the papers' "GFLOPs" are thop MAC counts
    memory_mb: Optional[float] = None  # the papers' formula: parameter bytes + input + output tensors
    released_code_params: Optional[int] = None
    isic2018_dice: Optional[float] = None  # as the paper reports it (its own split and averaging)
    source: str = ""
    notes: Tuple[str, ...] = field(default_factory=tuple)
    params_why: str = ""
    gmacs_why: str = ""
    memory_mb_why: str = ""


@dataclass(frozen=True)
class Recipe:
    """A model's training defaults, taken from its paper's released training script (``source`` names it).

    Each model file registers its own with its ``ModelConfig``; ``lightseg_edge.train.recipes.recipe_for`` reads it.
    """

    loss: str  # a name in lightseg_edge.train.losses.LOSSES
    group_weights: Optional[Tuple[float, ...]] = None  # deep supervision weights, deepest stage first
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-2
    batch_size: int = 8
    epochs: int = 300
    t_max: int = 50  # CosineAnnealingLR period in epochs (capped at the run's epochs)
    min_lr: float = 1e-5
    source: str = ""
