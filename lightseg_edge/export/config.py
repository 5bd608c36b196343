"""What an export is asked to do (``ExportConfig``) and the checks that need nothing but the config itself.

``validate`` rejects contradictions and impossible values with a message that names the flag, the value and what
was expected. It never changes a setting behind the user's back: the pipeline does exactly what the config says.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

from ..errors import ExportConfigError
from ..types import MAX_BATCH, MAX_INPUT_SIDE
from .keep import DEFAULT_MAX_DICE_DROP, DEFAULT_MIN_AGREEMENT, KeepSpec
from .targets import DEFAULT_FORMATS, FORMATS, get_target

SIMPLIFIERS = ("onnxsim", "onnxslim", "none")
CALIB_METHODS = ("minmax", "entropy", "percentile")
INT8_METHODS = ("ort", "modelopt")  # ONNX Runtime's quantize_static, NVIDIA ModelOpt's ONNX PTQ
# 17 is the first opset with LayerNormalization; ONNX Runtime's static quantization does not support opset >= 21 and
# the TorchScript exporter stops at 20.
MIN_OPSET, MAX_OPSET = 17, 20
DEFAULT_CALIB_IMAGES = 400  # TensorRT and Ultralytics recommend a few hundred calibration images
DEFAULT_WORKSPACE_MB = 1024  # NVIDIA's ONNX sample uses 1 GiB; TensorRT's own default (all device memory) is unkind on a Jetson
RANDOM_WEIGHTS = "random"


@dataclass(frozen=True)
class ExportConfig:
    """One export. Field names match the ``lightseg-export`` flags (``--calib-images`` -> ``calib_images``).

    ``weights``: ``None`` = the shipped pretrained weights, ``"random"`` = random initialisation (explicit opt-in,
    recorded in the manifest), anything else = a weights file (.safetensors or a trainer checkpoint).
    ``dynamic_batch``: ``(min, opt, max)``; ``None`` = a static batch of ``batch``.
    ``data``: dataset root whose held-out (``val``) split feeds the parity and accuracy checks.
    ``engine``: ``"auto"`` builds a TensorRT engine when TensorRT and a GPU are present and records it as skipped
    otherwise; ``"off"`` never builds one.
    ``formats``: what to produce (``--formats``): ``onnx`` (always made, every other target starts from it),
    ``tensorrt`` (the engine step), ``openvino``, ``tflite``, ``coreml``; ``fp16``/``int8`` apply to each format that
    has that precision.
    """

    model: Optional[str] = None
    weights: Optional[str] = None
    fp16: bool = False
    int8: bool = False
    calib_data: Optional[str] = None
    calib_images: int = DEFAULT_CALIB_IMAGES
    calib_method: str = "minmax"
    int8_method: str = "ort"
    # What keeps a higher precision (export.keep): "auto", "none", a number of layers or comma-separated layer names.
    int8_keep: str = "auto"
    fp16_keep: str = "none"
    max_dice_drop: float = DEFAULT_MAX_DICE_DROP
    min_agreement: float = DEFAULT_MIN_AGREEMENT
    select_images: int = 200  # held-out images the keep trials run on, apart from the eval_images reported
    img_size: Optional[int] = None
    opset: int = 17
    batch: int = 1
    dynamic_batch: Optional[Tuple[int, int, int]] = None
    simplifier: str = "onnxsim"
    from_onnx: Optional[str] = None
    workspace_mb: int = DEFAULT_WORKSPACE_MB
    output: Optional[str] = None
    data: Optional[str] = None
    parity_images: int = 16
    eval_images: int = 100
    fp16_check_images: int = 8
    seed: int = 0
    engine: str = "auto"
    formats: Tuple[str, ...] = DEFAULT_FORMATS
    progress: bool = True
    cpu_default: bool = True  # time the CPU-runnable artifacts with FP32's accuracy; record the fastest (export.cpu_default)
    # The export's own PyTorch work is a handful of forward passes. With more than one OpenMP thread they stall when
    # other processes load the cores (2.4 s instead of 0.06 s per UCM-Net batch with a training job running on the
    # 2-core development machine), so one thread is the robust default.
    torch_threads: int = 1

    @property
    def precisions(self) -> Tuple[str, ...]:
        """The requested reduced precisions, in the order they are produced."""
        return tuple(p for p, on in (("fp16", self.fp16), ("int8", self.int8)) if on)

    @property
    def engine_precision(self) -> str:
        """The engine carries the lowest requested precision (INT8 before FP16 before FP32)."""
        return "int8" if self.int8 else "fp16" if self.fp16 else "fp32"

    @property
    def keep_specs(self) -> Dict[str, KeepSpec]:
        """precision -> its parsed keep setting, for the requested reduced precisions."""
        flags = {"fp16": ("--fp16-keep", self.fp16_keep), "int8": ("--int8-keep", self.int8_keep)}
        return {p: KeepSpec.parse(flags[p][1], flags[p][0]) for p in self.precisions}

    @property
    def dynamic(self) -> bool:
        return self.dynamic_batch is not None

    @property
    def builds_engine(self) -> bool:
        return "tensorrt" in self.formats and self.engine != "off"

    @property
    def targets(self) -> Tuple[str, ...]:
        """The requested formats that are target modules (not the pipeline's own ONNX and engine steps)."""
        return tuple(f for f in self.formats if f not in DEFAULT_FORMATS)


def _positive(value: int, flag: str, high: Optional[int] = None) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ExportConfigError(f"{flag} must be a positive integer, got {value!r}")
    if high is not None and value > high:
        raise ExportConfigError(f"{flag} must be at most {high}, got {value!r}")


_PATH_FIELDS = (("model", "--model"), ("weights", "--weights"), ("calib_data", "--calib-data"), ("from_onnx", "--from-onnx"),
                ("output", "--output"), ("data", "--data"))


def check_fields(cfg: "ExportConfig") -> None:
    """An ExportConfig whose names and paths are non-empty strings: '' is not "unset" (it would export into the current
    folder, or fall back to the default data without a word), and a number is not a path. Run before anything reads
    a path (validate, and export's recovery of an interrupted run)."""
    if not isinstance(cfg, ExportConfig):
        raise ExportConfigError(f"export: expected an ExportConfig, got {type(cfg).__name__}")
    for name, flag in _PATH_FIELDS:
        value = getattr(cfg, name)
        if value is not None and (not isinstance(value, (str, os.PathLike)) or not str(value).strip()):
            got = "an empty value" if isinstance(value, str) else type(value).__name__
            raise ExportConfigError(f"{flag}: expected a {'name' if name == 'model' else 'path'}, got {got}")


def parse_dynamic_batch(text: str) -> Tuple[int, int, int]:
    """``"1,8,32"`` -> (1, 8, 32); the error says what the flag expects."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3:
        raise ExportConfigError(f"--dynamic-batch expects MIN,OPT,MAX (three integers, e.g. 1,8,32), got {text!r}")
    return values  # type: ignore[return-value]


def validate(cfg: ExportConfig) -> None:
    """Raise ExportConfigError for a contradictory or impossible config. Touches the filesystem only to check that
    named input files exist."""
    check_fields(cfg)
    if cfg.from_onnx is None and not cfg.model:
        raise ExportConfigError("nothing to export: pass --model NAME (a registry model) or --from-onnx FILE")
    if cfg.from_onnx is not None:
        src = Path(cfg.from_onnx)
        if not src.is_file():
            raise ExportConfigError(f"--from-onnx {src}: file not found")
        if cfg.weights is not None:
            raise ExportConfigError("--weights has no effect with --from-onnx (the ONNX file already holds the weights)")
        if cfg.img_size is not None:
            raise ExportConfigError("--img-size has no effect with --from-onnx (the ONNX file fixes the input size)")
    if not isinstance(cfg.opset, int) or not MIN_OPSET <= cfg.opset <= MAX_OPSET:
        raise ExportConfigError(
            f"--opset {cfg.opset!r} is not supported; expected {MIN_OPSET}..{MAX_OPSET} (17 has LayerNormalization; ONNX Runtime's "
            f"INT8 quantization and the TorchScript exporter stop at {MAX_OPSET})"
        )
    _positive(cfg.batch, "--batch", MAX_BATCH)
    if cfg.dynamic_batch is not None:
        if cfg.batch != 1:
            raise ExportConfigError("--batch and --dynamic-batch are exclusive: give a static batch or a MIN,OPT,MAX range, not both")
        if len(cfg.dynamic_batch) != 3:
            raise ExportConfigError(f"--dynamic-batch expects MIN,OPT,MAX, got {cfg.dynamic_batch!r}")
        lo, opt, hi = cfg.dynamic_batch
        for v in cfg.dynamic_batch:
            _positive(v, "--dynamic-batch values", MAX_BATCH)
        if not lo <= opt <= hi:
            raise ExportConfigError(f"--dynamic-batch {lo},{opt},{hi}: expected MIN <= OPT <= MAX")
    if cfg.simplifier not in SIMPLIFIERS:
        raise ExportConfigError(f"--simplifier {cfg.simplifier!r} is unknown; expected one of {', '.join(SIMPLIFIERS)}")
    if cfg.calib_method not in CALIB_METHODS:
        raise ExportConfigError(f"calibration method {cfg.calib_method!r} is unknown; expected one of {', '.join(CALIB_METHODS)}")
    if cfg.int8 and cfg.calib_data is None and cfg.from_onnx is None:
        raise ExportConfigError("--int8 needs --calib-data DIR: training images to calibrate the INT8 ranges on (e.g. the ISIC 2018 root)")
    if cfg.calib_data is not None and not cfg.int8:
        raise ExportConfigError("--calib-data is only used for INT8; did you mean to add --int8?")
    if cfg.calib_data is not None and not Path(cfg.calib_data).is_dir():
        raise ExportConfigError(f"--calib-data {cfg.calib_data}: folder not found")
    _positive(cfg.calib_images, "--calib-images")
    if cfg.int8_method not in INT8_METHODS:
        raise ExportConfigError(f"--int8-method {cfg.int8_method!r} is unknown; expected one of {', '.join(INT8_METHODS)}")
    if cfg.int8 and cfg.int8_method == "modelopt":
        _check_modelopt(cfg)
    _check_keep(cfg)
    for value, name in (
        (cfg.parity_images, "parity_images"),
        (cfg.eval_images, "eval_images"),
        (cfg.fp16_check_images, "fp16_check_images"),
    ):
        _positive(value, name)
    _positive(cfg.workspace_mb, "--workspace")
    _positive(cfg.torch_threads, "torch_threads")
    if cfg.engine not in ("auto", "off"):
        raise ExportConfigError(f"engine={cfg.engine!r}: expected 'auto' or 'off'")
    _check_formats(cfg)
    if cfg.img_size is not None:
        _positive(cfg.img_size, "--img-size")
    if cfg.weights not in (None, RANDOM_WEIGHTS) and not Path(cfg.weights).is_file():
        raise ExportConfigError(
            f"--weights {cfg.weights}: file not found (expected a .safetensors file or a lightseg-train checkpoint, or 'random')"
        )
    if cfg.data is not None and not Path(cfg.data).is_dir():
        raise ExportConfigError(f"--data {cfg.data}: folder not found")
    if cfg.output is not None and Path(cfg.output).exists() and not Path(cfg.output).is_dir():
        raise ExportConfigError(f"--output {cfg.output}: exists and is not a folder")


def _check_modelopt(cfg: ExportConfig) -> None:
    from .._optional import is_available

    if cfg.calib_method == "percentile":
        raise ExportConfigError("--calib-method percentile is not offered by ModelOpt (it has minmax and entropy); use one of those "
                                "or --int8-method ort")
    if not is_available("modelopt"):
        raise ExportConfigError("--int8-method modelopt needs NVIDIA ModelOpt: pip install 'lightseg-edge[modelopt]' (Python 3.10+)")


def _check_keep(cfg: ExportConfig) -> None:
    cfg.keep_specs  # parses (an error names the flag)
    for value, flag in ((cfg.max_dice_drop, "--max-dice-drop"), (cfg.min_agreement, "--min-agreement")):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ExportConfigError(f"{flag} must be a number from 0 to 1, got {value!r}")
    _positive(cfg.select_images, "select_images")


def _check_formats(cfg: ExportConfig) -> None:
    if not isinstance(cfg.formats, tuple) or not cfg.formats or any(f not in FORMATS for f in cfg.formats):
        raise ExportConfigError(f"--formats {cfg.formats!r}: expected a non-empty tuple of {', '.join(FORMATS)}")
    for name in cfg.targets:
        target = get_target(name)
        if target.needs_torch_model and cfg.from_onnx is not None:
            raise ExportConfigError(f"--formats {name}: its converter starts from the PyTorch model; export with --model NAME, "
                                    f"not --from-onnx")
        if cfg.dynamic_batch is not None and target.static_batch:
            raise ExportConfigError(f"--formats {name}: {name} models take a static batch; drop --dynamic-batch (or export {name} separately)")


def check_img_size(size: int, model: str, stride: int, flag: str = "--img-size", min_size: int = 0) -> None:
    """The model's downsampling needs H and W to be multiples of its stride, and at least its ``min_size`` (some models
    normalise their deepest map, which needs more than one pixel); at most MAX_INPUT_SIDE."""
    if size > MAX_INPUT_SIDE:
        raise ExportConfigError(f"{flag} {size}: expected at most {MAX_INPUT_SIDE} (the models are trained at 256)")
    smallest = max(stride, min_size)
    if size % stride or size < smallest:
        near = [c for c in (size // stride * stride, (size // stride + 1) * stride) if c >= smallest] or [smallest]
        what = f"is not a multiple of {model}'s stride {stride}" if size % stride else f"is below {model}'s smallest input {smallest}"
        raise ExportConfigError(f"{flag} {size} {what}; use {' or '.join(map(str, near))}")


def default_output(cfg: ExportConfig, model: str, size: int) -> Path:
    """``exports/<model>-<H>-<precisions>``, e.g. exports/ucmnet-256-fp16."""
    tag = "-".join(cfg.precisions) or "fp32"
    return Path("exports") / f"{model}-{size}-{tag}"
