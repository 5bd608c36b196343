"""INT8 Q/DQ ONNX with NVIDIA ModelOpt's ONNX post-training quantization, calibrated on real training images.

A second route beside ``int8.quantize_int8`` (ONNX Runtime ``quantize_static``). ModelOpt
(``modelopt.onnx.quantization.quantize``, PyPI ``nvidia-modelopt``) drives the same ONNX Runtime calibrators, but
decides *where* Q/DQ goes the way TensorRT fuses layers: it finds the Conv(+Add residual)(+activation) groups TensorRT
runs as one INT8 kernel and quantizes their inputs (on UCM-Net also Add and Resize inputs), puts no Q/DQ on
outputs, and skips convolutions TensorRT has no INT8 kernel for (fewer than 16 input or output channels outside a
few cases; on UCM-Net the last decoder block and the head stay FP32). Its settings are TensorRT's too: symmetric
INT8 (zero points 0), per-channel weights on the output-channel axis, FP32 weights behind a Q->DQ pair, no int32
bias DequantizeLinear.

What this module adds around it:
- calibration on an ``ImageSet`` (``read_image`` + ``preprocess``, as ``int8._reader``), in batches of ``batch``;
  ``minmax`` maps to ModelOpt's ``max`` and ``entropy`` to ``entropy``; ModelOpt has no percentile calibration;
- the layer that reads the image and the channel-statistics MatMuls stay FP32 (``int8.float_layers``, see int8.py
  for why), plus any ``keep`` nodes;
- ``high_precision_dtype="fp32"``: the unquantized rest stays FP32 (ModelOpt's default converts it to FP16);
- ``simplify=True`` (onnxslim), so Conv weights the export left as Constant nodes are quantized per channel;
- the result is re-read and must pass ``check_qdq_for_tensorrt`` and keep the excluded layers FP32; it is written
  atomically, unused opset domains stripped;
- ModelOpt monkey-patches onnxruntime.quantization (calibrators, the QDQ operator registry) while it runs; those
  patches are undone afterwards, so ``quantize_int8`` in the same process behaves as it does alone.

ModelOpt raises the model's opset to at least 19 (its minimum for Q/DQ). The TensorRT 8.x ONNX parser documents
opset 17 as its maximum, so this route's output targets TensorRT 10+; ``int8.quantize_int8`` keeps the export's opset.
Not verified here: no TensorRT engine has been built from this route's output (no GPU on the machine it was written
on); ONNX Runtime runs it, and its masks were compared with the FP32 ONNX ones on ISIC images.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np

from .._atomic import replaced
from .._optional import require
from ..data.io import read_image
from ..data.transforms import preprocess
from ..errors import ExportConfigError, ExportError
from ..types import PreprocessConfig
from .images import ImageSet
from .int8 import Int8Result, _strip_unused_domains, check_qdq_for_tensorrt, float_layers
from .onnx_export import check_onnx

log = logging.getLogger("lightseg_edge.export")

# our method name -> ModelOpt's calibration_method (ModelOpt maps any other string silently to max: check here)
METHODS = {"minmax": "max", "entropy": "entropy"}
# None: ModelOpt's TensorRT-guided placement (Conv/Add/Resize/... inputs, chosen per fusible group).
# int8.QUANTIZED_OPS here would quantize the inputs of every node of those types instead, as the ORT route does.
OP_TYPES_TO_QUANTIZE: Optional[Sequence[str]] = None
CALIBRATION_EPS = ["cpu"]  # ModelOpt's default tries CUDA and TensorRT first
HIGH_PRECISION_DTYPE = "fp32"
# onnxslim first: the export leaves some Conv weights as Constant nodes (UCM-Net: the 10 fc2 layers), which ModelOpt
# would calibrate like activations (one scale per tensor); folded into initializers they get per-channel scales.
SIMPLIFY = True


def _calibration_array(images: ImageSet, cfg: PreprocessConfig, batch: int) -> np.ndarray:
    """(N, 3, H, W) float32 with N a multiple of ``batch``: the ragged tail is dropped, as ``int8._reader`` does,
    and a single short group is padded by repeating its last image."""
    n = len(images.samples)
    used = n - n % batch if n >= batch else n
    if used == 0:
        return np.zeros((0,), np.float32)
    x = np.stack([preprocess(read_image(s.image), cfg) for s in images.samples[:used]])
    if len(x) < batch:
        x = np.concatenate([x, np.repeat(x[-1:], batch - len(x), axis=0)])
    return np.ascontiguousarray(x, dtype=np.float32)


@contextlib.contextmanager
def _ort_patches_undone() -> Iterator[None]:
    """Undo, on exit, what ``modelopt.onnx.quantization`` changes in onnxruntime.quantization while it runs
    (``ort_patching.patch_ort_modules`` and ``ort_utils.configure_ort``: calibrator methods, ``create_calibrator``,
    QDQQuantizer/BaseQuantizer methods, and the QDQ/QLinear operator registries)."""
    from onnxruntime.quantization import base_quantizer, calibrate, qdq_quantizer, registry

    owners = [
        calibrate,
        calibrate.CalibraterBase,
        calibrate.MinMaxCalibrater,
        calibrate.HistogramCalibrater,
        calibrate.HistogramCollector,
        qdq_quantizer.QDQQuantizer,
        base_quantizer.BaseQuantizer,
    ]
    saved = [(o, dict(vars(o))) for o in owners]
    names = ("QDQRegistry", "QLinearOpsRegistry", "IntegerOpsRegistry")
    registries = [getattr(registry, name) for name in names if hasattr(registry, name)]
    saved_registries = [(r, dict(r)) for r in registries]
    try:
        yield
    finally:
        for owner, attrs in saved:
            current = vars(owner)
            added = [k for k in current if k not in attrs] if isinstance(owner, type) else []  # a module may import lazily
            for name in added:
                with contextlib.suppress(AttributeError, TypeError):
                    delattr(owner, name)
            for name, value in attrs.items():
                if current.get(name, None) is not value:
                    with contextlib.suppress(AttributeError, TypeError):
                        setattr(owner, name, value)
        for reg, content in saved_registries:
            reg.clear()
            reg.update(content)


def _exact(names: Sequence[str]) -> List[str]:
    """ModelOpt reads nodes_to_exclude as regular expressions (``re.match``: a prefix match); match names exactly."""
    return [f"{re.escape(n)}$" for n in names]


def _quantized_or_missing(model, names: Sequence[str]) -> List[str]:
    """The nodes of ``names`` that are gone from ``model`` or read a DequantizeLinear output."""
    dq = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    nodes = {n.name: n for n in model.graph.node}
    return [k for k in names if k not in nodes or any(t in dq for t in nodes[k].input)]


def _opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def quantize_int8_modelopt(
    src: Path,
    dst: Path,
    images: ImageSet,
    cfg: PreprocessConfig,
    batch: int = 1,
    method: str = "minmax",
    progress: bool = True,
    keep: Sequence[str] = (),
) -> Int8Result:
    """FP32 ONNX ``src`` -> Q/DQ INT8 ONNX ``dst`` (atomic) with ModelOpt, calibrated on ``images``.

    ``keep``: names of further nodes to leave unquantized (exact node names), beside the image-reading layer.
    """
    if method == "percentile":
        raise ExportConfigError(
            "INT8 calibration 'percentile' is not offered by ModelOpt (modelopt.onnx.quantization has max and entropy): "
            "use minmax or entropy"
        )
    if method not in METHODS:
        raise ExportConfigError(f"unknown INT8 calibration method {method!r} for ModelOpt: use one of {', '.join(METHODS)}")
    if batch < 1:
        raise ExportConfigError(f"calibration batch must be a positive integer, got {batch}")
    onnx = require("onnx", purpose="INT8 quantization")
    moq = require("modelopt.onnx.quantization", extra="modelopt", purpose="ModelOpt INT8 quantization")
    import modelopt

    from .onnx_export import graph_io

    src, dst = Path(src), Path(dst)
    source = onnx.load(str(src), load_external_data=False)
    node_names = {n.name for n in source.graph.node}
    missing = [k for k in keep if k not in node_names]
    if missing:
        raise ExportConfigError(f"keep: no node named {', '.join(map(repr, missing))} in {src.name}")
    excluded = list(dict.fromkeys(float_layers(source) + list(keep)))
    if "" in excluded:
        raise ExportError("int8", f"{src.name}: the layer reading the image has no name, so ModelOpt cannot be told to keep it FP32")
    input_name = graph_io(src)[0]

    x = _calibration_array(images, cfg, batch)
    if len(x) == 0:
        raise ExportError("int8", f"no complete calibration batch: {len(images)} images for a static batch of {batch}")
    used = min(len(x), len(images))
    shapes = f"{input_name}:{'x'.join(str(d) for d in (batch, *x.shape[1:]))}"

    with tempfile.TemporaryDirectory(prefix="lightseg-int8-modelopt-") as work, replaced(dst) as tmp:
        # ModelOpt writes its intermediate models beside the input and the output: keep both in a folder of our own
        model_in, model_out = Path(work) / "model.onnx", Path(work) / "model.int8.onnx"
        shutil.copyfile(src, model_in)
        chatter = io.StringIO()  # onnxruntime's calibrators print() and draw tqdm bars themselves
        quiet = contextlib.ExitStack()
        if not progress:
            quiet.enter_context(contextlib.redirect_stdout(chatter))
            quiet.enter_context(contextlib.redirect_stderr(chatter))
        try:
            with _ort_patches_undone(), quiet:
                moq.quantize(
                    str(model_in),
                    quantize_mode="int8",
                    calibration_data=x,
                    calibration_method=METHODS[method],
                    calibration_shapes=shapes,
                    calibration_eps=list(CALIBRATION_EPS),
                    op_types_to_quantize=None if OP_TYPES_TO_QUANTIZE is None else list(OP_TYPES_TO_QUANTIZE),
                    nodes_to_exclude=_exact(excluded),
                    use_external_data_format=False,
                    output_path=str(model_out),
                    log_level="INFO" if progress else "CRITICAL",
                    high_precision_dtype=HIGH_PRECISION_DTYPE,
                    simplify=SIMPLIFY,
                )
        except (ExportError, ExportConfigError):
            raise
        except Exception as exc:
            log.debug("ModelOpt output before the failure:\n%s", chatter.getvalue()[-4000:])
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ExportError("int8", f"ModelOpt quantization failed: {type(exc).__name__}: {first}") from exc
        if not model_out.is_file():
            raise ExportError("int8", "ModelOpt quantization wrote no model")
        model = onnx.load(str(model_out))
        _strip_unused_domains(model)
        problems, nq, per_channel = check_qdq_for_tensorrt(model)
        if problems:
            raise ExportError("int8", "the ModelOpt Q/DQ graph is not TensorRT-parseable: " + "; ".join(problems[:5]))
        if nq == 0:
            raise ExportError("int8", "ModelOpt inserted no QuantizeLinear node (nothing quantizable found?)")
        not_kept = _quantized_or_missing(model, excluded)
        if not_kept:
            raise ExportError("int8", f"ModelOpt did not keep FP32 (quantized or renamed): {', '.join(not_kept[:5])}")
        onnx.save(model, str(tmp))
        check_onnx(tmp)
    pre_label = f"modelopt ({'onnxslim, ' if SIMPLIFY else ''}opset {_opset(source)} -> {_opset(model)}, shared constants duplicated)"
    calibration: Dict[str, Any] = {
        **images.provenance(),
        "images": used,
        "method": method,
        "batch": batch,
        "list_sha256": ImageSet(
            images.root, images.layout, images.split, images.samples[:used], images.available, images.seed
        ).list_sha256(),
        "preprocess": cfg.to_dict(),
        "quantizer": {
            "tool": "modelopt.onnx.quantization.quantize",
            "version": getattr(modelopt, "__version__", "unknown"),
            "format": "QDQ",
            "calibration_method": METHODS[method],
            "calibration_eps": list(CALIBRATION_EPS),
            "activations": "int8 symmetric per-tensor",
            "weights": "int8 symmetric per-channel",
            "placement": "modelopt (TensorRT fusion patterns)" if OP_TYPES_TO_QUANTIZE is None else list(OP_TYPES_TO_QUANTIZE),
            "high_precision_dtype": HIGH_PRECISION_DTYPE,
            "simplify": SIMPLIFY,
            "opset": _opset(model),
            "kept_fp32": excluded,
        },
    }
    return Int8Result(dst, calibration, nq, per_channel, pre_label)
