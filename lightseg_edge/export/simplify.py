"""Graph simplification: onnxsim, falling back to onnxslim; or none. The result is checked again.

Both tools fold BatchNorm into Conv and remove the TorchScript exporter's Identity/Constant/Shape clutter
(UCM-Net: 437 -> ~260 nodes), with outputs equal to 1e-7 (measured here). onnxsim comes first
because it is the reference simplifier most deployment guides use; onnxslim (pure Python, the only one installable on JetPack 5) is the fallback when
onnxsim is missing or fails. The parity step afterwards compares the simplified graph with PyTorch.

onnxsim's pass that folds a constant Mul into the following Conv is skipped: it takes the 0.5 out of every exact
GELU (0.5 * x * (1 + erf(x / sqrt 2))) feeding a convolution, and ONNX Runtime then no longer fuses the four nodes
left into one Gelu (UCM-Net: 437 -> 407 nodes after ONNX Runtime's own optimisations).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Tuple

from .._atomic import replaced
from .._optional import is_available, require
from ..errors import ExportError
from .onnx_export import check_onnx, graph_io

log = logging.getLogger("lightseg_edge.export")


_KEEP_GELU = ("fuse_preceding_mul_into_conv",)


def _onnxsim(model):
    onnxsim = require("onnxsim", purpose="simplifying the ONNX graph")
    simplified, ok = onnxsim.simplify(model, skipped_optimizers=list(_KEEP_GELU))
    if not ok:
        raise RuntimeError("onnxsim could not validate the simplified model")
    return simplified


def _onnxslim(model):
    onnxslim = require("onnxslim", purpose="simplifying the ONNX graph")
    return onnxslim.slim(model)


_TOOLS = {"onnxsim": _onnxsim, "onnxslim": _onnxslim}


def simplify_onnx(src: Path, dst: Path, simplifier: str = "onnxsim") -> Tuple[Path, str]:
    """Simplify ``src`` into ``dst`` (atomically); returns (dst, the tool actually used: onnxsim|onnxslim|none)."""
    onnx = require("onnx", purpose="simplifying the ONNX graph")
    src, dst = Path(src), Path(dst)
    with replaced(dst) as tmp:
        if simplifier == "none":
            shutil.copyfile(src, tmp)
            used = "none"
        else:
            order = [simplifier] + [t for t in ("onnxsim", "onnxslim") if t != simplifier]
            model, used, errors = None, "", []
            for tool in order:
                if not is_available(tool):
                    errors.append(f"{tool}: not installed")
                    continue
                try:
                    model = _TOOLS[tool](onnx.load(str(src)))
                    used = tool
                    break
                except Exception as exc:  # a simplifier crash is a reason to try the other one, not to give up
                    errors.append(f"{tool}: {type(exc).__name__}: {exc}")
                    log.warning("%s failed on %s (%s); trying the next simplifier", tool, src.name, exc)
            if model is None:
                raise ExportError("simplify", f"{src}: no simplifier succeeded ({'; '.join(errors)}); use --simplifier none to skip")
            onnx.save(model, str(tmp))
        check_onnx(tmp)
        if graph_io(tmp)[::2] != graph_io(src)[::2]:
            raise ExportError("simplify", f"{used} renamed the graph input/output ({graph_io(src)[::2]} -> {graph_io(tmp)[::2]})")
    return dst, used
