"""Model in deploy form -> ONNX (``torch.onnx.export``), then ``onnx.checker``.

The TorchScript exporter (``dynamo=False``) is used: on every zoo model it exported static and dynamic-batch graphs,
and after simplification its graphs ran 0-1.5 ms faster under ONNX Runtime than the dynamo exporter's
(measured here). The warnings it always gives are handled one by one, here, not globally.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple

from .._atomic import replaced
from .._optional import require
from ..errors import ExportError
from ..types import InputSpec

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def input_spec(batch: int, size: Tuple[int, int], dynamic: bool) -> InputSpec:
    h, w = size
    return InputSpec(name=INPUT_NAME, shape=(None if dynamic else batch, 3, h, w), dtype="float32", output_name=OUTPUT_NAME)


def check_onnx(path: Path) -> None:
    """``onnx.checker`` with full shape inference; the error names the file."""
    onnx = require("onnx", purpose="checking ONNX files")
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise ExportError(
            "onnx-check", f"{path}: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        ) from exc


@contextlib.contextmanager
def torchscript_export_warnings_handled() -> Iterator[None]:
    """Silence the three warnings the TorchScript exporter always gives for these models, each known to be harmless:

    - its DeprecationWarning: the TorchScript exporter is chosen on purpose (``dynamo=False``); its graphs are the
      ones the parity, FP16, INT8 and TensorRT checks are written for;
    - TracerWarnings where a model's Python code compares sizes (``interpolate``, ``instance_norm``): the export is
      for one fixed H and W, so the traced constant is the right value;
    - "instance_norm is set to train=True": InstanceNorm without running statistics normalises with the input's own
      statistics in eval mode too, which is what the exported graph does;
    - "Only steps=1 can be constant folded" for strided Slices (LMSAUnet, UNeXt-S): the Slice stays in the graph,
      correct, and the simplify step folds what can be folded.
    Anything else still shows.
    """
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=UserWarning, message=".*operator 'instance_norm' is set to train=True")
        warnings.filterwarnings("ignore", category=UserWarning, message="Constant folding - Only steps=1 can be constant folded")
        yield


def export_onnx(model, path: Path, spec: InputSpec, opset: int = 17, example_batch: Optional[int] = None) -> Path:
    """Write ``model`` (already in deploy form, eval mode) as ONNX to ``path``, atomically, and check it.

    The graph has one input ``spec.name`` (N, 3, H, W) float32 and one output ``spec.output_name`` (N, 1, H, W)
    logits; ``spec.shape[0] is None`` makes the batch dimension dynamic.
    """
    torch = require("torch", purpose="exporting a PyTorch model to ONNX")
    path = Path(path)
    dynamic = spec.shape[0] is None
    n = example_batch or (2 if dynamic else int(spec.shape[0]))  # a batch-1 example can fold the batch into constants
    h, w = spec.hw
    x = torch.zeros(n, 3, h, w, dtype=torch.float32)
    dynamic_axes: Optional[Dict[str, Dict[int, str]]] = {spec.name: {0: "batch"}, spec.output_name: {0: "batch"}} if dynamic else None
    with replaced(path) as tmp:
        with torchscript_export_warnings_handled(), torch.no_grad():
            torch.onnx.export(
                model,
                (x,),
                str(tmp),
                input_names=[spec.name],
                output_names=[spec.output_name],
                opset_version=opset,
                dynamic_axes=dynamic_axes,
                do_constant_folding=True,
                dynamo=False,
            )
        check_onnx(tmp)
    return path


def graph_io(path: Path) -> Tuple[str, Tuple[Optional[int], ...], str, int]:
    """(input name, input shape with None for symbolic dims, output name, opset) of a single-input ONNX model."""
    onnx = require("onnx", purpose="reading ONNX files")
    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1 or len(model.graph.output) != 1:
        raise ExportError(
            "onnx-check", f"{path}: expected one input and one output, got {len(inputs)} inputs and {len(model.graph.output)} outputs"
        )
    dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return inputs[0].name, dims, model.graph.output[0].name, opset


def count_nodes(path: Path) -> int:
    onnx = require("onnx", purpose="reading ONNX files")
    return len(onnx.load(str(path), load_external_data=False).graph.node)
