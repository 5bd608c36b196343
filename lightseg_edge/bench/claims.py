"""The papers' efficiency claims next to what this toolkit measures, one verdict per claim, with the reason.

How the papers measured (read from their released code: ``val.py`` in chunyuyuan/UCM-Net, checked here by
reproducing the baselines' published figures):
- **params**: the sum of ``numel()`` over ``model.parameters()`` of the freshly built training model, deep-supervision
  heads and never-used parameters included. Measured here the same way on ``create_model(name)``; the parameters the
  deployed forward actually uses are reported beside it.
- **"GFLOPs"**: ``thop.profile`` MAC counts (not FLOPs) of the training forward on one 1x3x256x256 input. thop adds
  2-4 MACs per element for every norm module and counts the stage heads. Measured here with PyTorch's own
  ``FlopCounterMode`` on the deployed forward (``models.complexity.count_macs``): convolutions, linears and matmuls
  only, no heads. So ours is a lower bound of the papers' figure and differences are expected; the verdict says
  "reproduced" only when the figures agree to the paper's printed precision.
- **"memory"**: ``val.py:estimate_model_inference_memory_usage`` is a formula, not a measurement: (parameter bytes
  + input tensor bytes + output tensor bytes) / 2^20, i.e. parameters x 4 B + 1.0 MiB at 256x256. Recomputed here
  with our parameter count, and shown next to the real inference memory the benchmark measured (RSS), which also
  holds activations, the runtime and the allocator.

The figures and what is known about each discrepancy live with each model, in its file in ``lightseg_edge.models``
(``get_model_config(name).claims``: a ``PaperClaims`` with its source and per-claim ``*_why``); this module holds only
the checking.
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .records import BenchResult, ClaimCheck

MIB = float(1 << 20)

GMACS_METHOD = (
    "the paper's 'GFLOPs' are thop MACs of the training forward (norm modules add 2-4 MACs per element, stage heads "
    "counted); ours are torch FlopCounterMode MACs of the deployed forward (conv/linear/matmul only), a lower bound; "
    "in the 2-FLOPs-per-MAC convention FLOPs are 2x these figures"
)
MEMORY_METHOD = (
    "a formula, not a measurement: parameter bytes + one fp32 input + one fp32 output tensor; activations, workspace, "
    "the runtime and the allocator are left out"
)


@dataclass(frozen=True)
class ModelFigures:
    """What this toolkit counts for one registry model."""

    model: str
    input_size: Tuple[int, int]
    params: int  # numel over create_model(name).parameters(), as the papers count
    deploy_params: int  # parameters the deployed (eval, single-output) forward uses
    macs: Optional[int]  # FlopCounterMode on the deployed forward, batch 1; None when not computed
    formula_mb: float  # the papers' memory formula with ``params``


def memory_formula_mb(params: int, input_size: Tuple[int, int], batch: int = 1) -> float:
    """(params x 4 B + 1x3xHxW fp32 input + 1x1xHxW fp32 output) / 2^20, as ``val.py`` computes it."""
    h, w = input_size
    return (params * 4 + batch * 3 * h * w * 4 + batch * h * w * 4) / MIB


def model_figures(name: str, input_size: Optional[Tuple[int, int]] = None, with_macs: bool = True, threads: int = 1) -> ModelFigures:
    """Count parameters and MACs of a registry model (seconds for most models; ~40 s of MACs for U-Net on one core).

    Runs with ``threads`` torch threads (restored afterwards): one thread is the robust choice on a shared machine,
    where OpenMP barriers stall multi-threaded small ops.
    """
    import torch

    from ..models import create_model, get_model_config
    from ..models.complexity import count_macs, used_parameters

    cfg = get_model_config(name)
    size = tuple(input_size or cfg.input_size)
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    try:
        model = create_model(name).eval()
        params = sum(p.numel() for p in model.parameters())  # before deploy(): some deploy forms fold BN in place
        small = (2 * cfg.stride, 2 * cfg.stride)  # which parameters are used does not depend on the input size
        deploy_params = used_parameters(model, small)
        macs = count_macs(model.deploy(), size) if with_macs else None
    finally:
        torch.set_num_threads(before)
    return ModelFigures(name, (int(size[0]), int(size[1])), int(params), int(deploy_params), None if macs is None else int(macs),
                        memory_formula_mb(int(params), (int(size[0]), int(size[1]))))


def _half_unit(value: float) -> float:
    """Half a unit in the last printed digit: the rounding tolerance of a figure as the paper prints it.

    Integers with trailing zeros are rounded figures (390,000 is "0.39 M": +-5,000); 0.0465 is +-0.00005.
    """
    if float(value).is_integer():
        v = int(value)
        zeros = 0
        while v and v % 10 == 0:
            v //= 10
            zeros += 1
        return 0.0 if zeros < 3 else 0.5 * 10 ** zeros
    exponent = decimal.Decimal(repr(float(value))).normalize().as_tuple().exponent
    return 0.5 * 10.0 ** int(exponent)


def _delta(measured: float, paper: float, fmt: str) -> str:
    d = measured - paper
    pct = f", {100.0 * d / paper:+.1f}%" if paper else ""
    return f"{format(d, fmt)}{pct}"


def _memory_context(model: str, results: Sequence[BenchResult]) -> List[Dict[str, Any]]:
    """The real memory the benchmark measured for ``model`` (smallest batch per runtime and precision)."""
    out: Dict[Tuple[str, str], Dict[str, Any]] = {}
    for r in sorted(results, key=lambda r: r.batch):
        if r.model != model or not r.ok or r.memory is None or r.memory.inference_peak_delta_mb is None:
            continue
        key = (r.runtime, r.precision)
        if key in out:
            continue
        out[key] = {
            "runtime": r.runtime, "precision": r.precision, "batch": r.batch,
            "load_delta_mb": r.memory.load_delta_mb, "inference_peak_delta_mb": r.memory.inference_peak_delta_mb,
            "process_peak_mb": r.memory.process_peak_mb,
        }
    return list(out.values())


def _absent(statement: str, why: str) -> str:
    """``statement`` that the paper gives no such figure, with the claim's ``*_why`` in brackets when there is one."""
    return f"{statement} ({why})" if why else statement


def _params_check(name: str, claims: Any, fig: ModelFigures) -> ClaimCheck:
    paper, released = claims.params, claims.released_code_params
    extra = {"deploy_params": fig.deploy_params, "source": claims.source}
    if paper is None:
        return ClaimCheck(name, "params", None, fig.params, "not claimed", _absent("the paper states no parameter count", claims.params_why),
                          "params", released, extra)
    tol = _half_unit(paper)
    parts = []
    if abs(fig.params - paper) <= tol:
        verdict = "reproduced"
        parts.append(f"{fig.params:,} " + (f"rounds to the paper's {paper:,} (+-{tol:,.0f})" if tol else "equals the paper's count"))
    else:
        verdict = "differs"
        parts.append(f"ours {fig.params:,} vs paper {paper:,} ({_delta(fig.params, paper, '+,')})")
        if released is not None:
            if released == paper:
                parts.append("the released code has the paper's count")
            elif released == fig.params:
                parts.append(f"ours equals the released code's {released:,}")
            else:
                parts.append(f"released code {released:,} ({fig.params - released:+,} ours)")
    if fig.deploy_params != fig.params:
        parts.append(f"the deployed forward uses {fig.deploy_params:,}")
    if claims.params_why:
        parts.append(claims.params_why)
    return ClaimCheck(name, "params", paper, fig.params, verdict, "; ".join(parts), "params", released, extra)


def _gmacs_check(name: str, claims: Any, fig: ModelFigures) -> ClaimCheck:
    paper = claims.gmacs
    ours = None if fig.macs is None else fig.macs / 1e9
    extra = {"counter": "torch.utils.flop_counter.FlopCounterMode (deploy form), FLOPs / 2", "input_size": list(fig.input_size)}
    if ours is None:
        return ClaimCheck(name, "gmacs", paper, None, "not measured", "MACs were not computed in this run", "GMACs", None, extra)
    if paper is None:
        why = _absent("the paper states no GMACs figure", claims.gmacs_why)
        return ClaimCheck(name, "gmacs", None, ours, "not claimed", f"{why}; ours {ours:.4f} G", "GMACs", None, extra)
    tol = _half_unit(paper)
    if abs(ours - paper) <= tol:
        verdict, head = "reproduced", f"ours {ours:.6f} G rounds to the paper's {paper:g} G"
    else:
        verdict, head = "differs", f"ours {ours:.4f} G vs paper {paper:g} G ({_delta(ours, paper, '+.4f')})"
    parts = [head]
    if claims.gmacs_why:
        parts.append(claims.gmacs_why)
    parts.append(GMACS_METHOD)
    return ClaimCheck(name, "gmacs", paper, ours, verdict, "; ".join(parts), "GMACs", None, extra)


def _memory_check(name: str, claims: Any, fig: ModelFigures, measured: List[Dict[str, Any]]) -> ClaimCheck:
    paper = claims.memory_mb
    ours = fig.formula_mb
    real = "; ".join(
        f"measured {m['runtime']} {m['precision']} b{m['batch']}: load +{m['load_delta_mb']:.1f} MB, inference peak "
        f"+{m['inference_peak_delta_mb']:.1f} MB RSS (process peak {m['process_peak_mb']:.0f} MB)" for m in measured
    ) or "no inference memory measured in this run"
    extra = {"formula": f"({fig.params:,} x 4 B + 1x3x{fig.input_size[0]}x{fig.input_size[1]} + 1x1x{fig.input_size[0]}x{fig.input_size[1]} fp32) / 2^20",
             "measured": measured}
    if paper is None:
        why = _absent("the paper states no memory figure", claims.memory_mb_why)
        return ClaimCheck(name, "memory_mb", None, ours, "not claimed",
                          f"{why}; its formula would give {ours:.4f} MB; {MEMORY_METHOD}; {real}", "MB", None, extra)
    tol = _half_unit(paper)
    if abs(ours - paper) <= tol:
        verdict, head = "reproduced", f"the formula with our {fig.params:,} parameters gives {ours:.4f} MB = the paper's {paper:g}"
    else:
        verdict, head = "differs", f"the formula with our {fig.params:,} parameters gives {ours:.4f} MB vs the paper's {paper:g} (the parameter counts differ)"
        if claims.params is not None:
            own = memory_formula_mb(claims.params, fig.input_size)
            if abs(own - paper) <= tol:
                head += f"; the paper's figure is the formula applied to its own {claims.params:,} parameters ({own:.4f})"
    parts = [head]
    if claims.memory_mb_why:
        parts.append(claims.memory_mb_why)
    parts += [MEMORY_METHOD, real]
    return ClaimCheck(name, "memory_mb", paper, ours, verdict, "; ".join(parts), "MB", None, extra)


def check_claims(name: str, figures: ModelFigures, results: Sequence[BenchResult] = ()) -> List[ClaimCheck]:
    """Params, GMACs and memory claims of ``name``'s paper against ``figures`` (and the measured memory in ``results``)."""
    from ..models import get_model_config

    claims = get_model_config(name).claims
    return [
        _params_check(name, claims, figures),
        _gmacs_check(name, claims, figures),
        _memory_check(name, claims, figures, _memory_context(name, results)),
    ]


def claims_table(models: Optional[Sequence[str]] = None, figures: Optional[Dict[str, ModelFigures]] = None,
                 results: Sequence[BenchResult] = (), with_macs: bool = True, input_size: Optional[Tuple[int, int]] = None) -> List[ClaimCheck]:
    """Every claim of every model in ``models`` (default: the whole registry); ``figures`` are counted when missing."""
    from ..models import list_models

    figures = dict(figures or {})
    out: List[ClaimCheck] = []
    for name in (models or list_models()):
        fig = figures.get(name) or model_figures(name, input_size, with_macs=with_macs)
        out += check_claims(name, fig, results)
    return out
