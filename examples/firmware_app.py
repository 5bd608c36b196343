"""A minimal firmware-style loop: read frames, segment, draw the lesion contour, report FPS.

Depends on ``lightseg_edge.runtimes`` (numpy, OpenCV and one inference engine) only: no torch on the device.

    python examples/firmware_app.py exports/ucmnet  0                  # camera 0
    python examples/firmware_app.py exports/ucmnet  clip.mp4 --out annotated.avi
    python examples/firmware_app.py model.onnx      images/ --preprocess-size 256 --preprocess-mode minmax

Frames come from a camera index, a video file or a folder of images (read in name order). With ``--out`` the
annotated frames are written to a video file (MJPG) so the loop can be checked on a headless device.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Iterator, List, Optional

import cv2
import numpy as np

from lightseg_edge.errors import LightsegError
from lightseg_edge.runtimes import draw_contours, load_predictor

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


def frames(source: str, max_frames: Optional[int]) -> Iterator[np.ndarray]:
    """RGB uint8 frames from a camera index, a video file or an image folder."""
    count = 0
    path = Path(source)
    if path.is_dir():
        for f in sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS):
            if max_frames is not None and count >= max_frames:
                return
            bgr = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if bgr is None:
                print(f"skipping unreadable image {f}", file=sys.stderr)
                continue
            count += 1
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return
    cap = cv2.VideoCapture(int(source) if source.isdigit() else source)
    if not cap.isOpened():
        raise SystemExit(f"error: cannot open {source!r} as a camera, video or image folder")
    try:
        while max_frames is None or count < max_frames:
            ok, bgr = cap.read()
            if not ok:
                return
            count += 1
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="export folder, .onnx or .plan")
    ap.add_argument("frames", help="camera index, video file or image folder")
    ap.add_argument("--runtime", default="auto")
    ap.add_argument("--device")
    ap.add_argument("--max-frames", type=int)
    ap.add_argument("--out", help="write annotated frames to this video file")
    ap.add_argument("--report-every", type=int, default=30, help="print FPS every N frames")
    ap.add_argument("--preprocess-size", type=int, help="for a bare .onnx/.plan without manifest: square input size")
    ap.add_argument("--preprocess-mode", default="minmax", help="for a bare .onnx/.plan: minmax | scale | meanstd | raw")
    args = ap.parse_args(argv)

    options = {}
    if args.preprocess_size:
        options["preprocess"] = {"size": [args.preprocess_size] * 2, "mode": args.preprocess_mode}
    try:
        predictor = load_predictor(args.model, runtime=args.runtime, device=args.device, **options)
    except LightsegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    writer, writer_size = None, None
    n, t_start, t_window, n_window = 0, time.perf_counter(), time.perf_counter(), 0
    with predictor:
        for rgb in frames(args.frames, args.max_frames):
            mask = predictor.predict(rgb)
            shown = draw_contours(rgb, mask)
            if args.out:
                if writer is None:
                    writer_size = (shown.shape[1], shown.shape[0])
                    writer = cv2.VideoWriter(args.out, cv2.VideoWriter_fourcc(*"MJPG"), 15.0, writer_size)
                if (shown.shape[1], shown.shape[0]) != writer_size:  # a video keeps its first frame's size
                    shown = cv2.resize(shown, writer_size, interpolation=cv2.INTER_AREA)
                writer.write(cv2.cvtColor(shown, cv2.COLOR_RGB2BGR))
            n += 1
            n_window += 1
            if n_window == args.report_every:
                now = time.perf_counter()
                print(f"{n} frames, {n_window / (now - t_window):.1f} FPS (lesion area {mask.mean() * 100:.1f}%)", flush=True)
                t_window, n_window = now, 0
    if writer is not None:
        writer.release()
    total = time.perf_counter() - t_start
    if n == 0:
        print("error: no frames read", file=sys.stderr)
        return 1
    print(f"done: {n} frames in {total:.2f} s, {n / total:.1f} FPS end to end ({predictor.runtime.value}, {predictor.device})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
