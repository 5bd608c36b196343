"""lightseg-predict: segment images, image folders, video files or a camera with any runtime.

Writes ``<stem>_mask.png`` (0 = skin, 255 = lesion, at the input's resolution) and, with ``--overlay``,
``<stem>_overlay.png`` (the lesion contour drawn on the image) into ``--out``; video frames go to
``<out>/<video stem>/<frame>_mask.png``. Every file is written atomically. For video and camera input the
per-frame latency (pre-processing + inference + post-processing) is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

from .._hashing import shown
from .._progress import progress_bar
from ..runtimes.registry import alias_table, known_suffixes, runtime_names
from ..types import PRECISION_NAMES
from ._common import add_tta_argument, batch_size, output_dir, positive_int, probability, run_cli

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lightseg-predict", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="export folder, model file (" + ", ".join(known_suffixes()) + ") or registry model name")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, image folders, video files or a camera index (0, 1, ...)")
    p.add_argument("--runtime", default="auto", choices=("auto",) + tuple(alias_table()), metavar="RUNTIME",
                   help="auto (from the source), or one of " + ", ".join(runtime_names()) + " (default: %(default)s)")
    p.add_argument("--precision", choices=PRECISION_NAMES, help="which export artifact to run (default: the export's own precision, the one its folder is named after, or the engine)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: the best available for the runtime)")
    p.add_argument("--model", help="registry model name, for checkpoints that do not record it")
    p.add_argument("--out", type=output_dir, default="predictions", help="output folder (default: %(default)s)")
    p.add_argument("--overlay", action="store_true", help="also write the image with the predicted lesion contour")
    p.add_argument("--threshold", type=probability, default=0.5, help="probability threshold for the mask (default: %(default)s)")
    add_tta_argument(p)
    p.add_argument("--batch-size", type=batch_size, default=8, help="images per inference call for image inputs")
    p.add_argument("--max-frames", type=positive_int, help="stop a video or camera after this many frames")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _classify(item: str) -> Tuple[str, object]:
    """('camera', index) | ('video', path) | ('images', [paths])."""
    from ..data.io import IMAGE_EXTS
    from ..errors import DataError

    path = Path(item)
    if item.isascii() and item.isdigit() and not path.exists():
        return "camera", int(item)
    if path.is_dir():
        # Everything named like an image is listed (a folder, a FIFO, a broken link too), so what cannot be read is
        # reported as skipped rather than silently ignored.
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."))
        if not files:
            raise DataError(f"{path}: no images in this folder (expected {', '.join(IMAGE_EXTS)} files)")
        return "images", files
    if not path.is_file():
        found = "not a regular file (a FIFO or device)" if path.exists() else "a broken link" if path.is_symlink() else "no such file or folder"
        raise DataError(f"{shown(path)}: {found} (expected an image, an image folder, a video or a camera index)")
    suffix = path.suffix.lower()
    if suffix in VIDEO_EXTS:
        return "video", path
    if suffix in IMAGE_EXTS:
        return "images", [path]
    raise DataError(f"{path}: unsupported input type {suffix!r}; expected an image ({', '.join(IMAGE_EXTS)}) or a video ({', '.join(VIDEO_EXTS)})")


class _Names:
    """Output stems that never collide (two inputs named alike from different folders)."""

    def __init__(self) -> None:
        self._used: Dict[str, int] = {}

    def __call__(self, path: Path) -> str:
        stem = path.stem
        if stem in self._used:
            stem = f"{path.parent.name}_{stem}" if path.parent.name else stem
        base, k = stem, 1
        while stem in self._used:
            k += 1
            stem = f"{base}_{k}"
        self._used[stem] = 1
        return stem


def _failure(f: object, exc: Exception) -> str:
    """One line for an input that failed, naming it (shown: a newline in a file name stays on the line)."""
    text = str(exc)
    return text if shown(f) in text else f"{shown(f)}: {text}"


def _write(out_dir: Path, stem: str, image, mask, overlay: bool, inputs: Set[str]) -> int:
    from ..data.io import write_png_atomic
    from ..data.overlay import draw_contours
    from ..errors import DataError

    targets = [out_dir / f"{stem}_mask.png"] + ([out_dir / f"{stem}_overlay.png"] if overlay else [])
    for target in targets:  # --out is the input folder and an input is named like an output (x.png and x_mask.png)
        if os.path.realpath(str(target)) in inputs:
            raise DataError(f"{shown(target)}: is one of the input images and would be overwritten; choose another --out")
    write_png_atomic(targets[0], (mask * 255).astype("uint8"))
    if overlay:
        write_png_atomic(targets[1], draw_contours(image, mask))
    return len(targets)


def _predict_chunk(predictor, loaded: List[Tuple[Path, object]], args, failures: List[str]) -> List[Tuple[Path, object, object]]:
    """Masks for the loaded images of one batch; when the batch call fails, image by image, so one bad image costs
    only itself."""
    from ..errors import LightsegError

    try:
        masks = predictor.predict_batch([im for _, im in loaded], threshold=args.threshold, names=[str(f) for f, _ in loaded])
        return [(f, im, m) for (f, im), m in zip(loaded, masks)]
    except LightsegError:
        if len(loaded) == 1:
            raise
    done = []
    for f, im in loaded:
        try:
            done.append((f, im, predictor.predict(im, threshold=args.threshold, name=str(f))))
        except LightsegError as exc:
            failures.append(_failure(f, exc))
    return done


def _images(predictor, files: List[Path], out_dir: Path, names: _Names, args, failures: List[str], inputs: Set[str]) -> int:
    """Every readable image is predicted and written; each one that fails is added to ``failures`` and skipped."""
    from ..data.io import read_image
    from ..errors import DataError, LightsegError

    bar = progress_bar(len(files), "predict", enabled=not args.no_progress and len(files) > 1)
    written = 0
    step = args.batch_size
    try:
        for start in range(0, len(files), step):
            chunk = files[start:start + step]
            loaded = []
            for f in chunk:
                try:
                    loaded.append((f, read_image(f)))
                except LightsegError as exc:
                    failures.append(_failure(f, exc))
            try:
                results = _predict_chunk(predictor, loaded, args, failures) if loaded else []
            except LightsegError as exc:
                failures.append(_failure(loaded[0][0], exc))
                results = []
            for f, im, m in results:
                try:
                    written += _write(out_dir, names(f), im, m, args.overlay, inputs)
                except DataError as exc:  # this image's output only (a full disk is an OutputError: it stops the run)
                    failures.append(_failure(f, exc))
            bar.update(len(chunk))
    finally:
        bar.close()
    return written


def _frames(capture, max_frames: Optional[int]) -> Iterator:
    import cv2

    i = 0
    while max_frames is None or i < max_frames:
        ok, frame = capture.read()
        if not ok:
            return
        yield i, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        i += 1


def _stream(predictor, what, label: str, out_dir: Path, args, inputs: Set[str]) -> int:
    import cv2

    from .._atomic import make_dir
    from ..errors import DataError

    kind = "camera" if isinstance(what, int) else "video"
    try:
        cap = cv2.VideoCapture(str(what) if isinstance(what, Path) else what)
    except (cv2.error, OverflowError, SystemError):  # a camera index beyond what OpenCV takes
        cap = None
    if cap is None or not cap.isOpened():
        raise DataError(f"{shown(what) if kind == 'video' else label}: OpenCV cannot open this {kind}")
    frame_dir = make_dir(out_dir / label, "--out")
    latencies = []
    written = 0
    try:
        for i, rgb in _frames(cap, args.max_frames):
            t0 = time.perf_counter()
            mask = predictor.predict(rgb, threshold=args.threshold)
            ms = (time.perf_counter() - t0) * 1000.0
            latencies.append(ms)
            print(f"{label} frame {i}: {ms:.1f} ms", flush=True)
            written += _write(frame_dir, f"{i:06d}", rgb, mask, args.overlay, inputs)
    finally:
        cap.release()
    if not latencies:
        raise DataError(f"{shown(what) if kind == 'video' else label}: no frames could be read")
    mean = sum(latencies) / len(latencies)
    print(f"{label}: {len(latencies)} frames, mean {mean:.1f} ms/frame ({1000.0 / mean:.1f} FPS)")
    return written


def _run(argv: List[str]) -> int:
    args = _parser().parse_args(argv)
    from .._atomic import make_dir, remove_stale_temporaries
    from ..errors import DataError
    from ..runtimes import load_predictor

    jobs = [_classify(item) for item in args.inputs]  # fail on a bad input before loading the model
    options = {"threshold": args.threshold, "tta": args.tta}
    if args.precision:
        options["precision"] = args.precision
    if args.model:
        options["model"] = args.model
    names = _Names()
    written = 0
    failures: List[str] = []
    inputs = {os.path.realpath(str(p)) for kind, what in jobs if kind == "images" for p in what}
    with load_predictor(args.source, runtime=args.runtime, device=args.device, **options) as predictor:
        out_dir = make_dir(args.out, "--out")  # only once the model loaded: a typo in SOURCE leaves no empty folder
        remove_stale_temporaries(out_dir)  # what a killed run's atomic writes left behind
        print(f"{predictor.source}: {predictor.runtime.value} {predictor.precision.value} on {predictor.device}")
        for kind, what in jobs:
            if kind == "images":
                written += _images(predictor, what, out_dir, names, args, failures, inputs)
                continue
            try:  # a video or camera that cannot be opened or read costs only itself
                written += _stream(predictor, what, names(what) if kind == "video" else f"camera{what}", out_dir, args, inputs)
            except DataError as exc:
                failures.append(_failure(what, exc) if kind == "video" else str(exc))
    print(f"wrote {written} file(s) to {out_dir}")
    return _report(failures, jobs)


def _report(failures: List[str], jobs: List[Tuple[str, object]]) -> int:
    if not failures:
        return 0
    for line in failures:
        print(f"failed: {line}", file=sys.stderr)
    streams = sum(1 for kind, _ in jobs if kind != "images")
    total = streams + sum(len(what) for kind, what in jobs if kind == "images")  # type: ignore[arg-type]
    print(f"error: {len(failures)} of {total} {'input' if streams else 'image'}(s) failed (listed above); the others were written",
          file=sys.stderr)
    return 1


def main(argv: Optional[List[str]] = None) -> int:
    return run_cli(_run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
