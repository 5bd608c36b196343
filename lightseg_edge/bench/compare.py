"""Two predictors, the same real images: how far apart are their outputs, and does the difference matter?

``compare(a, b, samples)`` runs any two predictors (``load_predictor`` results: a registry model, a checkpoint, an
export folder at some precision, an ``.onnx``, a TensorRT engine) on the same images and records, per image and in
total:

- ``|d|``: max, p50 and p99 of the absolute output difference. When both sides feed the network the same input (same
  size and normalisation) the raw logits of ``infer`` on one shared preprocessed batch are compared, at network
  resolution (``compared == "logits"``); otherwise each side's probabilities at the image's own size
  (``compared == "probabilities"``). The dataset-level percentiles come from a log-spaced histogram of every pixel
  (within one 2.3% bin of the exact value; 0 stays exactly 0); the maximum is exact.
- A-vs-B mask agreement: Dice and IoU between the two masks, at the image's own size (the masks ``predict`` returns).
  The dataset-level agreement sums pixels over all images first, like ``export.parity.mask_agreement``.
- Boundary disagreement: the pixels where the masks differ, split into those within ``band_px`` pixels of either
  mask's outline (a band from OpenCV morphology: contour jitter) and those elsewhere (a region one side misses).
- With ground truth: each side's Dice against it (at the image's size), their per-image means and the delta B - A.

numpy + OpenCV only: torch is imported only by a PyTorch predictor, never here. Python 3.8 compatible.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..data.layouts import Sample
from ..data.transforms import logits_to_mask, preprocess_batch, proba_to_mask, resize_mask
from ..errors import DataError, InvalidInputError
from ..metrics import Confusion, dice, iou

BAND_PX = 3  # "near the outline": within this many pixels of either mask's contour
LOGITS, PROBABILITIES = "logits", "probabilities"
A_COLOR: Tuple[int, int, int] = (255, 40, 40)  # RGB red, drawn wide under B
B_COLOR: Tuple[int, int, int] = (40, 140, 255)  # RGB blue, drawn thin on top of A
SYMBOL = {LOGITS: "|dlogit|", PROBABILITIES: "|dproba|"}
WorstMasks = Tuple[int, np.ndarray, np.ndarray, Optional[np.ndarray]]  # image index, A's mask, B's mask, ground truth


# ---------------------------------------------------------------------------------------------------------------------
# records
# ---------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Side:
    """What one side of the comparison runs."""

    label: str  # "A" or "B"
    source: str
    runtime: str
    precision: str
    device: str
    input_size: Tuple[int, int]  # (H, W) of the network input
    normalize: str

    @classmethod
    def of(cls, label: str, predictor: Any) -> "Side":
        pre = predictor.preprocess_config
        return cls(label, str(predictor.source), _value(predictor.runtime), _value(predictor.precision), str(predictor.device),
                   (int(pre.size[0]), int(pre.size[1])), str(pre.mode))

    def describe(self) -> str:
        h, w = self.input_size
        return f"{self.label}: {self.source} ({self.runtime}, {self.precision}, {self.device}; input {h}x{w} {self.normalize})"

    def short(self) -> str:
        """ASCII, for an overlay's legend (OpenCV's fonts draw nothing else)."""
        name = Path(self.source).name or self.source
        text = f"{self.label}: {name} {self.runtime} {self.precision}"
        return text.encode("ascii", "replace").decode("ascii")


@dataclass(frozen=True)
class ImageComparison:
    case_id: str
    image: str
    height: int
    width: int
    max_abs: float  # of the compared quantity (logits or probabilities), over the finite pixels
    p50_abs: float
    p99_abs: float
    nonfinite: int  # pixels where either side's output is NaN or infinite (left out of the figures above)
    ref_max_abs: float  # max |A| of the compared quantity: the scale the differences are relative to
    dice: float  # A vs B masks
    iou: float
    lesion_a: int  # mask pixels
    lesion_b: int
    disagree: int  # pixels where the masks differ ...
    disagree_boundary: int  # ... within BAND_PX of either outline
    disagree_elsewhere: int
    dice_a: Optional[float] = None  # against the ground truth, when there is one
    dice_b: Optional[float] = None

    @property
    def delta(self) -> Optional[float]:
        return None if self.dice_a is None or self.dice_b is None else self.dice_b - self.dice_a

    def to_dict(self) -> Dict[str, Any]:
        return _finite({**asdict(self), "delta": self.delta})


@dataclass(frozen=True)
class Summary:
    images: int
    max_abs: float
    p50_abs: float
    p99_abs: float
    nonfinite: int
    ref_max_abs: float
    agreement_dice: float  # dataset-level: pixels of all images summed, then Dice (the --min-agreement figure)
    agreement_iou: float
    mean_image_dice: float
    min_image_dice: float
    pixels: int
    disagree: int
    disagree_boundary: int
    disagree_elsewhere: int
    gt_images: int  # images with ground truth (all or none count: see summarize)
    mdice_a: Optional[float] = None
    mdice_b: Optional[float] = None

    @property
    def delta(self) -> Optional[float]:
        return None if self.mdice_a is None or self.mdice_b is None else self.mdice_b - self.mdice_a

    @property
    def boundary_share(self) -> Optional[float]:
        """The fraction of the disagreeing pixels that lie near an outline (None when the masks agree everywhere)."""
        return self.disagree_boundary / self.disagree if self.disagree else None

    def to_dict(self) -> Dict[str, Any]:
        return _finite({**asdict(self), "delta": self.delta, "boundary_share": self.boundary_share,
                        "disagree_fraction": self.disagree / self.pixels if self.pixels else 0.0})


@dataclass(frozen=True)
class Gate:
    flag: str
    value: Optional[float]
    limit: float
    passed: bool
    reason: str


@dataclass(frozen=True)
class Comparison:
    a: Side
    b: Side
    compared: str  # LOGITS or PROBABILITIES
    why: str  # why that quantity
    threshold: float
    band_px: int
    summary: Summary
    images: Tuple[ImageComparison, ...]
    worst: Tuple[int, ...]  # indices into images, lowest A-vs-B Dice first

    def to_dict(self) -> Dict[str, Any]:
        return {"a": asdict(self.a), "b": asdict(self.b), "compared": self.compared, "quantity": SYMBOL[self.compared],
                "why": self.why, "threshold": self.threshold, "band_px": self.band_px, "summary": self.summary.to_dict(),
                "worst": [self.images[i].case_id for i in self.worst], "images": [r.to_dict() for r in self.images]}


def _value(x: Any) -> str:
    return str(getattr(x, "value", x))


def _finite(d: Dict[str, Any]) -> Dict[str, Any]:
    """NaN/inf -> None: the JSON report must parse everywhere (strict JSON has no NaN)."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


# ---------------------------------------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageSet:
    root: Path
    layout: str  # a dataset layout, or "images" for a plain folder of images
    split: str
    samples: Tuple[Sample, ...]
    available: int  # before --images

    @property
    def has_truth(self) -> bool:
        return bool(self.samples) and all(s.mask is not None for s in self.samples)

    @property
    def missing_truth(self) -> int:
        return sum(s.mask is None for s in self.samples)

    def describe(self) -> str:
        from ..data.layouts import describe_data

        return describe_data(self.root, self.layout, self.split, len(self.samples), self.available)


def select_images(data: str, split: Optional[str] = None, limit: Optional[int] = None, default_split: str = "val") -> ImageSet:
    """The images to compare on: a dataset root (layout auto-detected, ``split`` or ``default_split``; 'all' for
    every split), or a plain folder of images (no masks, no splits). ``limit``: the first N of them."""
    from ..data.layouts import find_layout, list_samples, plain_images

    root = Path(data)
    layout = find_layout(root)
    if layout is None:
        samples = plain_images(root) if root.is_dir() else []
        if not samples:
            raise DataError(f"--data {data}: neither a known dataset layout nor a folder of images (.jpg, .png, ...)")
        if split not in (None, "all"):
            raise DataError(f"--split {split}: {data} is a plain folder of images, which has no splits; omit --split")
        chosen, shown_split = samples, "all"
    else:
        shown_split = split or default_split
        try:
            chosen = list_samples(root, None if shown_split == "all" else shown_split, layout, require_masks=False)
        except DataError as exc:
            raise DataError(f"--data {data} --split {shown_split}: {exc} (--split all takes every image)") from exc
    picked = chosen[:limit] if limit else chosen
    return ImageSet(root, layout or "images", shown_split, tuple(picked), len(chosen))


# ---------------------------------------------------------------------------------------------------------------------
# measurements
# ---------------------------------------------------------------------------------------------------------------------
def same_input(a: Any, b: Any) -> bool:
    """Whether both predictors turn an image into the same network input (size and normalisation)."""
    pa, pb = a.preprocess_config, b.preprocess_config
    if tuple(pa.size) != tuple(pb.size) or pa.mode != pb.mode:
        return False
    return pa.mode != "meanstd" or (tuple(pa.mean), tuple(pa.std)) == (tuple(pb.mean), tuple(pb.std))


def comparison_mode(a: Any, b: Any) -> Tuple[str, str]:
    """(LOGITS or PROBABILITIES, why), from the two sides' preprocessing."""
    pa, pb = a.preprocess_config, b.preprocess_config
    if same_input(a, b):
        return LOGITS, f"logits at network resolution, of one shared preprocessed input (both sides: {pa.size[0]}x{pa.size[1]} {pa.mode})"
    return PROBABILITIES, (f"probabilities at each image's own size (the inputs differ: A {pa.size[0]}x{pa.size[1]} {pa.mode}, "
                           f"B {pb.size[0]}x{pb.size[1]} {pb.mode})")


def infer_one(predictor: Any, x: np.ndarray) -> np.ndarray:
    """hxw logits of a 1x3xHxW input; a fixed-batch model gets the input repeated to its batch."""
    n = getattr(predictor, "static_batch_size", None) or 1
    batch = np.repeat(x, n, axis=0) if n > 1 else x
    return predictor.infer(batch)[0, 0]


def outputs(a: Any, b: Any, image: np.ndarray, mode: str, threshold: float) -> Tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """(|A - B| of the compared quantity, max |A| (its scale), A's mask, B's mask); masks HxW {0,1} at the image's
    size, as ``predict`` returns them."""
    size = image.shape[:2]
    if mode == LOGITS:
        x = preprocess_batch([image], a.preprocess_config)
        la, lb = infer_one(a, x), infer_one(b, x)
        if la.shape != lb.shape:
            raise InvalidInputError(f"the two sides' logits differ in shape ({list(la.shape)} vs {list(lb.shape)}) for the same input")
        return np.abs(la - lb), _max_abs(la), logits_to_mask(la, size, threshold), logits_to_mask(lb, size, threshold)
    pa, pb = a.predict_proba(image), b.predict_proba(image)
    return np.abs(pa - pb), _max_abs(pa), proba_to_mask(pa, threshold), proba_to_mask(pb, threshold)


def _max_abs(x: np.ndarray) -> float:
    finite = np.abs(x[np.isfinite(x)])
    return float(finite.max()) if finite.size else float("nan")


def diff_stats(diff: np.ndarray) -> Tuple[float, float, float, int]:
    """(max, p50, p99, non-finite count) of an array of absolute differences, over its finite values."""
    finite = diff[np.isfinite(diff)]
    nonfinite = int(diff.size - finite.size)
    if finite.size == 0:
        return float("nan"), float("nan"), float("nan"), nonfinite
    p50, p99 = np.percentile(finite, [50, 99])
    return float(finite.max()), float(p50), float(p99), nonfinite


def outline_band(mask_a: np.ndarray, mask_b: np.ndarray, radius: int = BAND_PX) -> np.ndarray:
    """HxW bool: pixels within ``radius`` of either mask's outline (lesion/skin edge; the image border is no edge)."""
    import cv2

    k3 = np.ones((3, 3), np.uint8)
    edges = cv2.morphologyEx(mask_a, cv2.MORPH_GRADIENT, k3) | cv2.morphologyEx(mask_b, cv2.MORPH_GRADIENT, k3)
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(edges, disc) > 0


def disagreement(mask_a: np.ndarray, mask_b: np.ndarray, radius: int = BAND_PX) -> Tuple[int, int, int]:
    """(disagreeing pixels, of which within ``radius`` of an outline, of which elsewhere)."""
    differ = mask_a != mask_b
    total = int(np.count_nonzero(differ))
    if not total:
        return 0, 0, 0
    near = int(np.count_nonzero(differ & outline_band(mask_a, mask_b, radius)))
    return total, near, total - near


def _truth(sample: Sample, size: Tuple[int, int]) -> Optional[np.ndarray]:
    from ..data.io import read_mask

    return None if sample.mask is None else resize_mask(read_mask(sample.mask), size)


class AbsHistogram:
    """Counts of absolute differences in log-spaced bins (1e-12 .. 1e6, 100 per decade), zeros apart: the dataset's
    percentiles without keeping every pixel. ``quantile`` is exact for 0 and within one bin (2.3%) of the exact
    percentile otherwise."""

    EDGES = np.logspace(-12, 6, 18 * 100 + 1)

    def __init__(self) -> None:
        self.counts = np.zeros(len(self.EDGES) + 1, np.int64)
        self.zeros = 0
        self.total = 0
        self.max = 0.0

    def add(self, values: np.ndarray) -> None:
        v = np.asarray(values, np.float64).ravel()
        v = v[np.isfinite(v)]
        if not v.size:
            return
        positive = v[v > 0]
        self.zeros += int(v.size - positive.size)
        self.total += int(v.size)
        self.max = max(self.max, float(v.max()))
        self.counts += np.bincount(np.searchsorted(self.EDGES, positive, side="right"), minlength=len(self.counts))

    def quantile(self, q: float) -> float:
        """The value below which a fraction ``q`` of the values lie, interpolated linearly inside its bin (and capped
        at the exact maximum)."""
        if not self.total:
            return float("nan")
        rank = q * self.total - self.zeros
        if rank <= 0:
            return 0.0
        cum = np.cumsum(self.counts)
        k = int(np.searchsorted(cum, rank, side="left"))
        before = float(cum[k - 1]) if k else 0.0
        lo = float(self.EDGES[k - 1]) if k else 0.0
        hi = float(self.EDGES[k]) if k < len(self.EDGES) else self.max
        return min(self.max, lo + (hi - lo) * (rank - before) / float(self.counts[k]))


def summarize(records: Sequence[ImageComparison], hist: AbsHistogram, totals: Confusion) -> Summary:
    gt = [r for r in records if r.dice_a is not None and r.dice_b is not None]
    with_truth = len(gt) == len(records) and bool(records)
    per_image = [r.dice for r in records]
    return Summary(
        images=len(records), max_abs=max((r.max_abs for r in records if math.isfinite(r.max_abs)), default=float("nan")),
        p50_abs=hist.quantile(0.5), p99_abs=hist.quantile(0.99), nonfinite=sum(r.nonfinite for r in records),
        ref_max_abs=max((r.ref_max_abs for r in records if math.isfinite(r.ref_max_abs)), default=float("nan")),
        agreement_dice=dice(totals), agreement_iou=iou(totals),
        mean_image_dice=float(np.mean(per_image)), min_image_dice=float(min(per_image)),
        pixels=sum(r.height * r.width for r in records), disagree=sum(r.disagree for r in records),
        disagree_boundary=sum(r.disagree_boundary for r in records), disagree_elsewhere=sum(r.disagree_elsewhere for r in records),
        gt_images=len(gt) if with_truth else 0,
        mdice_a=float(np.mean([r.dice_a for r in gt])) if with_truth else None,
        mdice_b=float(np.mean([r.dice_b for r in gt])) if with_truth else None,
    )


def _keep_worst(worst: List[Tuple[float, int, Any]], item: Tuple[float, int, Any], k: int) -> List[Tuple[float, int, Any]]:
    """The ``k`` lowest-Dice entries of worst + [item] (ties: the earlier image first)."""
    return sorted(worst + [item], key=lambda t: (t[0], t[1]))[:k] if k else []


def compare(a: Any, b: Any, samples: Sequence[Sample], threshold: float = 0.5, worst: int = 5, band_px: int = BAND_PX,
            on_image: Optional[Callable[[ImageComparison], None]] = None) -> Tuple[Comparison, List[WorstMasks]]:
    """Run both predictors on every sample. Returns the comparison and, for its ``worst`` images (lowest A-vs-B
    Dice first), (index, A's mask, B's mask, ground truth or None) for the overlays. Memory stays flat: one image at
    a time plus the ``worst`` masks."""
    from ..data.io import read_image

    if not samples:
        raise DataError("no images to compare")
    mode, why = comparison_mode(a, b)
    hist, totals = AbsHistogram(), Confusion(0, 0, 0, 0)
    records: List[ImageComparison] = []
    kept: List[Tuple[float, int, Any]] = []
    for i, sample in enumerate(samples):
        image = read_image(sample.image)
        diff, scale, mask_a, mask_b = outputs(a, b, image, mode, threshold)
        record = _record(sample, image, diff, scale, mask_a, mask_b, band_px)
        hist.add(diff)
        totals = totals + Confusion.of(mask_b, mask_a)
        records.append(record)
        kept = _keep_worst(kept, (record.dice, i, (mask_a, mask_b)), worst)
        if on_image is not None:
            on_image(record)
    result = Comparison(Side.of("A", a), Side.of("B", b), mode, why, float(threshold), band_px, summarize(records, hist, totals),
                        tuple(records), tuple(i for _, i, _ in kept))
    return result, [(i, ma, mb, _truth(samples[i], ma.shape)) for _, i, (ma, mb) in kept]


def _record(sample: Sample, image: np.ndarray, diff: np.ndarray, scale: float, mask_a: np.ndarray, mask_b: np.ndarray,
            band_px: int) -> ImageComparison:
    truth = _truth(sample, image.shape[:2])
    c = Confusion.of(mask_b, mask_a)
    vs_truth = (dice(Confusion.of(mask_a, truth)), dice(Confusion.of(mask_b, truth))) if truth is not None else (None, None)
    h, w = image.shape[:2]
    return ImageComparison(sample.case_id, str(sample.image), int(h), int(w), *diff_stats(diff), scale, dice(c), iou(c),
                           int(mask_a.sum()), int(mask_b.sum()), *disagreement(mask_a, mask_b, band_px), *vs_truth)


# ---------------------------------------------------------------------------------------------------------------------
# gates
# ---------------------------------------------------------------------------------------------------------------------
def check_gates(summary: Summary, min_agreement: Optional[float] = None, max_delta: Optional[float] = None) -> Tuple[Gate, ...]:
    """The CI gates asked for: --min-agreement on the dataset-level A-vs-B Dice, --max-delta on |mDice_B - mDice_A|."""
    gates = []
    if min_agreement is not None:
        v = summary.agreement_dice
        ok = v >= min_agreement
        text = f"A-vs-B mask Dice {v:.6f} {'>=' if ok else '<'} --min-agreement {min_agreement:g}"
        gates.append(Gate("--min-agreement", v, min_agreement, ok, text))
    if max_delta is not None:
        d = summary.delta
        if d is None:
            raise DataError("--max-delta needs ground truth for every image; these images have none")
        ok = abs(d) <= max_delta
        text = (f"|mDice B - A| = |{summary.mdice_b:.6f} - {summary.mdice_a:.6f}| = {abs(d):.6f} {'<=' if ok else '>'} "
                f"--max-delta {max_delta:g}")
        gates.append(Gate("--max-delta", d, max_delta, ok, text))
    return tuple(gates)


# ---------------------------------------------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------------------------------------------
def overlay(image: np.ndarray, mask_a: np.ndarray, mask_b: np.ndarray, truth: Optional[np.ndarray], comparison: Comparison,
            record: ImageComparison) -> np.ndarray:
    """The image at its own size with the ground truth (green), A (red, wide) and B (blue, thin, on top) outlines
    and a legend: where A and B agree, the blue line runs inside the red one."""
    from ..data.overlay import GT_COLOR, contour_thickness, draw_contours, draw_legend

    t = contour_thickness(image.shape)
    out = draw_contours(image, truth, thickness=t, pred_color=GT_COLOR) if truth is not None else image
    out = draw_contours(out, mask_a, thickness=2 * t + 1, pred_color=A_COLOR)
    out = draw_contours(out, mask_b, thickness=t, pred_color=B_COLOR)
    entries: List[Tuple[Optional[Tuple[int, int, int]], str]] = [(A_COLOR, comparison.a.short()), (B_COLOR, comparison.b.short())]
    if truth is not None:
        entries.append((GT_COLOR, "ground truth"))
    entries.append((None, f"A vs B Dice {record.dice:.3f}"))
    return draw_legend(out, entries)


def overlay_name(rank: int, record: ImageComparison) -> str:
    return f"worst{rank:02d}_{record.case_id}_dice{record.dice:.3f}.png"


def _f(v: Optional[float], spec: str = ".4f") -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def _disagree_text(s: Summary, band_px: int) -> str:
    pct = 100.0 * s.disagree / s.pixels if s.pixels else 0.0
    return f"{s.disagree:,} px ({pct:.3f}%): {s.disagree_boundary:,} within {band_px} px of an outline, {s.disagree_elsewhere:,} elsewhere"


def summary_rows(c: Comparison) -> List[Tuple[str, str]]:
    """(figure, value) rows shared by the console and Markdown tables."""
    s, q = c.summary, SYMBOL[c.compared]
    rows = [("images", str(s.images)),
            ("compared", c.why),
            (f"max {q}", _f(s.max_abs, ".3e")),
            (f"p50 {q}", _f(s.p50_abs, ".3e")),
            (f"p99 {q}", _f(s.p99_abs, ".3e")),
            ("max |A| (scale)", _f(s.ref_max_abs, ".3g")),
            ("A-vs-B mask Dice (dataset)", _f(s.agreement_dice, ".5f")),
            ("A-vs-B mask IoU (dataset)", _f(s.agreement_iou, ".5f")),
            ("A-vs-B Dice per image", f"mean {_f(s.mean_image_dice, '.5f')}, min {_f(s.min_image_dice, '.5f')}"),
            ("disagreeing pixels", _disagree_text(s, c.band_px))]
    if s.nonfinite:
        rows.append(("non-finite outputs", f"{s.nonfinite:,} px left out of the {q} figures"))
    if s.delta is not None:
        rows += [("mDice vs ground truth", f"A {_f(s.mdice_a)}, B {_f(s.mdice_b)}"), ("delta mDice (B - A)", _f(s.delta, "+.5f"))]
    else:
        rows.append(("mDice vs ground truth", "no ground truth"))
    return rows


def worst_rows(c: Comparison) -> Tuple[List[str], List[List[str]]]:
    q = SYMBOL[c.compared]
    head = ["case", "A-vs-B Dice", "IoU", f"max {q}", "disagree (near/else px)", "Dice A", "Dice B"]
    rows = [[r.case_id, _f(r.dice), _f(r.iou), _f(r.max_abs, ".2e"), f"{r.disagree_boundary}/{r.disagree_elsewhere}",
             _f(r.dice_a), _f(r.dice_b)] for r in (c.images[i] for i in c.worst)]
    return head, rows


def format_console(c: Comparison, gates: Sequence[Gate] = (), sides: bool = True) -> str:
    rows = summary_rows(c)
    width = max(len(k) for k, _ in rows)
    lines = [f"  {k.ljust(width)}  {v}" for k, v in rows]
    for g in gates:
        lines.append(f"  {('gate ' + g.flag).ljust(width)}  {'pass' if g.passed else 'FAIL'}: {g.reason}")
    if c.worst:
        head, body = worst_rows(c)
        widths = [max(len(x) for x in col) for col in zip(head, *body)]
        lines.append(f"worst {len(c.worst)} image(s), lowest A-vs-B Dice first:")
        lines += ["  " + "  ".join(x.ljust(w) for x, w in zip(row, widths)).rstrip() for row in [head] + body]
    head = [c.a.describe(), c.b.describe()] if sides else []
    return "\n".join(head + [f"A vs B at threshold {c.threshold:g}:"] + lines)


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def format_markdown(c: Comparison, gates: Sequence[Gate] = (), data_line: str = "") -> str:
    out = ["# Comparison of two artifacts", ""]
    if data_line:
        out += [f"- {_md_cell(data_line)}"]
    out += [f"- {_md_cell(c.a.describe())}", f"- {_md_cell(c.b.describe())}", f"- threshold {c.threshold:g}", "",
            "| figure | value |", "|---|---|"]
    out += [f"| {_md_cell(k)} | {_md_cell(v)} |" for k, v in summary_rows(c)]
    out += [f"| gate {g.flag} | {'pass' if g.passed else '**FAIL**'}: {_md_cell(g.reason)} |" for g in gates]
    if c.worst:
        head, body = worst_rows(c)
        out += ["", f"## Worst {len(c.worst)} image(s) (lowest A-vs-B Dice)", "", "| " + " | ".join(map(_md_cell, head)) + " |",
                "|" + "---|" * len(head)]
        out += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in body]
    return "\n".join(out) + "\n"
