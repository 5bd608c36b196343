"""The demo page: a Gradio Blocks app over :mod:`.analysis` and :mod:`.sources`.

``DemoState`` does the work (read the upload with ``read_image``'s checks, segment, describe) and raises
LightsegErrors; it needs no Gradio, so it is tested without a server. ``build_app`` wires it into the page, turning
each LightsegError into a ``gr.Error`` the page shows as a message (and a client gets as an error). ``serve`` starts
the server and ``DemoServer.close`` stops it and closes every predictor.

Nothing here reaches the network at run time: Gradio's analytics are off, there are no share links, the theme uses
the fonts Gradio ships (no CDN), server-side rendering (a Node process) and the MCP server are off.
"""

from __future__ import annotations

import base64
import functools
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import DISCLAIMER
from .analysis import (
    BOTH_COLOR,
    ONLY_A_COLOR,
    ONLY_B_COLOR,
    Segmentation,
    agreement_map,
    describe,
    dice,
    for_display,
    overlay,
    probability_map,
    summary_markdown,
)
from .sources import PredictorCache, SourceOption

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
MAX_UPLOAD_BYTES = 256 * 1024 * 1024  # one upload (Gradio refuses more); the pixel cap is read_image's
CACHE_SECONDS = (300, 900)  # uploads and results are deleted every 5 min once 15 min old (and all at shutdown)
TITLE = "lightseg-edge demo"
_UPLOAD_ENV = "GRADIO_TEMP_DIR"

# Set before Gradio is imported: it reads them at import time.
_OFFLINE_ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


def import_gradio() -> Any:
    """Gradio, with analytics off; MissingDependencyError naming the ``demo`` extra when it is not installed."""
    from .._optional import require

    for key, value in _OFFLINE_ENV.items():
        os.environ[key] = value
    return require("gradio", extra="demo", purpose="the web demo (lightseg-demo)")


def _color(rgb: Tuple[int, int, int]) -> str:
    return "#%02x%02x%02x" % rgb


@dataclass
class Result:
    """One model's output on the uploaded image, ready for the page."""

    option: SourceOption
    runtime: str
    precision: str
    seg: Segmentation
    load_s: float

    @property
    def title(self) -> str:
        return f"{self.option.label} · {self.runtime} · {self.precision}"

    def details(self) -> Dict[str, Any]:
        d = describe(self.seg)
        d.update(model=self.option.label, source=self.option.source, runtime=self.runtime, precision=self.precision,
                 model_load_s=round(self.load_s, 3))
        return d

    def markdown(self) -> str:
        text = summary_markdown(self.seg, self.title)
        if self.load_s > 0:
            text += f"  \n(model loaded on first use: {self.load_s:.2f} s, not part of the latency)"
        return text


class DemoState:
    """What the page runs, without Gradio: the menu, the predictor cache and the upload limits."""

    def __init__(self, options: Sequence[SourceOption], cache: Optional[PredictorCache] = None, threshold: float = 0.5,
                 max_pixels: Optional[int] = None) -> None:
        from ..errors import InvalidInputError

        if not options:
            raise InvalidInputError("the demo needs at least one model")
        self.options: Dict[str, SourceOption] = {o.label: o for o in options}
        self.cache = cache if cache is not None else PredictorCache()
        self.threshold = float(threshold)
        self.max_pixels = max_pixels

    @property
    def labels(self) -> List[str]:
        return list(self.options)

    def option(self, label: str) -> SourceOption:
        from ..errors import InvalidInputError

        if label not in self.options:
            raise InvalidInputError(f"unknown model {label!r}; choose one of: {', '.join(self.options)}")
        return self.options[label]

    def check_choice(self, label: str, runtime: str, precision: str) -> SourceOption:
        from ..errors import InvalidInputError

        opt = self.option(label)
        if runtime not in opt.runtime_names:
            raise InvalidInputError(f"{label}: runtime {runtime!r} is not available here; choose one of: {', '.join(opt.runtime_names)}")
        if precision not in opt.precisions(runtime):
            raise InvalidInputError(f"{label} on {runtime}: precision {precision!r} is not available here; "
                                    f"choose one of: {', '.join(opt.precisions(runtime))}")
        return opt

    def read_upload(self, path: Optional[str]) -> np.ndarray:
        """The uploaded file as HxWx3 RGB, through ``read_image`` (format by content, pixel cap before decoding).

        Errors name the file as the user called it, not the server's temporary path."""
        from ..data.io import read_image
        from ..errors import DataError, InvalidInputError

        if not path:
            raise InvalidInputError("no image: drop a dermoscopy image (JPEG, PNG, BMP, TIFF or WebP) or take one with the webcam")
        try:
            return read_image(path, max_pixels=self.max_pixels)
        except DataError as exc:
            shown = Path(path).name
            message = str(exc).replace(repr(str(path)), shown).replace(str(path), shown)
            raise DataError(f"image refused: {message}") from None

    def run(self, image: np.ndarray, label: str, runtime: str, precision: str, threshold: Optional[float] = None) -> Result:
        opt = self.check_choice(label, runtime, precision)
        predictor, load_s = self.cache.get(opt.source, runtime, precision)
        from .analysis import timed_segment

        seg = timed_segment(predictor, image, self.threshold if threshold is None else threshold)
        return Result(opt, runtime, precision, seg, load_s)

    # -- the page's two actions --------------------------------------------------------------------------------------
    def segment(self, path: Optional[str], label: str, runtime: str, precision: str,
                threshold: Optional[float] = None) -> Tuple[np.ndarray, np.ndarray, str, Dict[str, Any]]:
        """(overlay, probability map, summary markdown, details) for one model."""
        image = self.read_upload(path)
        res = self.run(image, label, runtime, precision, threshold)
        return (for_display(overlay(image, res.seg.mask)), for_display(probability_map(res.seg.proba)),
                res.markdown(), res.details())

    def compare(self, path: Optional[str], a: Tuple[str, str, str], b: Tuple[str, str, str],
                threshold: Optional[float] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray, str, Dict[str, Any]]:
        """(overlay A, overlay B, agreement map, summary markdown, details) for two models or precisions."""
        image = self.read_upload(path)
        ra = self.run(image, *a, threshold=threshold)
        rb = self.run(image, *b, threshold=threshold)
        score = dice(ra.seg.mask, rb.seg.mask)
        text = (
            f"Agreement Dice (A vs B): **{score:.4f}**  \n"
            f"Agreement map: <span style='color:{_color(BOTH_COLOR)}'>■</span> both · "
            f"<span style='color:{_color(ONLY_A_COLOR)}'>■</span> A only · <span style='color:{_color(ONLY_B_COLOR)}'>■</span> B only\n\n"
            f"A: {ra.markdown()}\n\nB: {rb.markdown()}"
        )
        details = {"dice": round(score, 6), "a": ra.details(), "b": rb.details()}
        return (for_display(overlay(image, ra.seg.mask)), for_display(overlay(image, rb.seg.mask)),
                for_display(agreement_map(image, ra.seg.mask, rb.seg.mask)), text, details)


def _upload_widget(gr: Any, **kwargs: Any) -> Any:
    """A gr.Image input whose preprocess hands our handler the uploaded file untouched (no PIL decode).

    Gradio's own preprocess opens the file with PIL first, so a non-image or a huge image would fail there with
    PIL's words (or allocate) before ``read_image`` could check it. The override is on the instance: a subclass
    would make Gradio write a ``.pyi`` stub beside this module (its component metaclass does), and the browser keeps
    Gradio's own Image widget either way."""
    widget = gr.Image(type="filepath", image_mode=None, **kwargs)

    def preprocess(payload: Any) -> Optional[str]:
        if payload is None:
            return None
        url = getattr(payload, "url", None) or ""
        if url.startswith("data:"):  # a webcam or clipboard image sent inline
            if len(url) // 4 * 3 > MAX_UPLOAD_BYTES:
                raise gr.Error(f"image refused: over the {MAX_UPLOAD_BYTES // 2**20} MB upload limit", print_exception=False)
            raw = base64.b64decode(url.split(",", 1)[-1], validate=False)
            fd, name = tempfile.mkstemp(prefix="webcam_", suffix=".img", dir=widget.GRADIO_CACHE)
            with os.fdopen(fd, "wb") as f:
                f.write(raw)
            return name
        return payload.path

    widget.preprocess = preprocess
    return widget


def build_app(state: DemoState) -> Any:
    """The gr.Blocks page (not launched)."""
    gr = import_gradio()
    from ..errors import LightsegError

    def guarded(fn):
        @functools.wraps(fn)  # the API documents the wrapped function's parameter names
        def call(*args):
            try:
                return fn(*args)
            except LightsegError as exc:
                raise gr.Error(" ".join(str(exc).split()), title="Cannot do that", print_exception=False) from None

        return call

    def runtime_menu(label):
        opt = state.option(label)
        rt = opt.runtime_names[0]
        precs = opt.precisions(rt)
        return gr.Dropdown(choices=opt.runtime_names, value=rt), gr.Dropdown(choices=precs, value=precs[0])

    def precision_menu(label, runtime):
        precs = state.option(label).precisions(runtime)
        return gr.Dropdown(choices=precs, value=precs[0] if precs else None)

    def model_controls(prefix: str, index: int = 0):
        opt = state.option(state.labels[min(index, len(state.labels) - 1)])
        rt = opt.runtime_names[0]
        model = gr.Dropdown(choices=state.labels, value=opt.label, label="Model", elem_id=f"{prefix}model")
        runtime = gr.Dropdown(choices=opt.runtime_names, value=rt, label="Runtime", elem_id=f"{prefix}runtime")
        precision = gr.Dropdown(choices=opt.precisions(rt), value=opt.precisions(rt)[0], label="Precision", elem_id=f"{prefix}precision")
        model.change(guarded(runtime_menu), [model], [runtime, precision], api_visibility="private", queue=False)
        runtime.change(guarded(precision_menu), [model, runtime], [precision], api_visibility="private", queue=False)
        return model, runtime, precision

    def segment(path, label, runtime, precision, threshold):
        return state.segment(path, label, runtime, precision, threshold)

    def segment_on_upload(path, label, runtime, precision, threshold):
        if not path:  # the image was cleared
            return None, None, "", None
        return state.segment(path, label, runtime, precision, threshold)

    def compare(path, a_label, a_rt, a_prec, b_label, b_rt, b_prec, threshold):
        return state.compare(path, (a_label, a_rt, a_prec), (b_label, b_rt, b_prec), threshold)

    sources = ["upload", "webcam", "clipboard"]
    notice = f"**⚠ {DISCLAIMER}**"
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=CACHE_SECONDS) as blocks:
        gr.Markdown(f"# {TITLE}: skin-lesion segmentation\n{notice}", elem_id="disclaimer")
        with gr.Tabs():
            with gr.Tab("Single model", id="single"):
                with gr.Row():
                    with gr.Column(scale=1):
                        image = _upload_widget(gr, label="Dermoscopy image (drop, pick or webcam)", sources=sources,
                                               elem_id="input-image")
                        model, runtime, precision = model_controls("")
                        threshold = gr.Slider(0.0, 1.0, value=state.threshold, step=0.01, label="Threshold", elem_id="threshold")
                        run = gr.Button("Segment", variant="primary", elem_id="segment")
                    with gr.Column(scale=2):
                        with gr.Row():
                            out_overlay = gr.Image(label="Overlay (lesion filled and outlined)", format="png", interactive=False,
                                                   elem_id="overlay")
                            out_proba = gr.Image(label="Probability map (dark 0 - bright 1)", format="png", interactive=False,
                                                 elem_id="proba")
                        summary = gr.Markdown(label="Summary", elem_id="summary")
                        with gr.Accordion("Details (JSON)", open=False):
                            details = gr.JSON(label="Details", elem_id="details")
                inputs = [image, model, runtime, precision, threshold]
                outputs = [out_overlay, out_proba, summary, details]
                run.click(guarded(segment), inputs, outputs, api_name="segment", concurrency_limit=2)
                image.change(guarded(segment_on_upload), inputs, outputs, api_visibility="private", concurrency_limit=2)
            with gr.Tab("Side by side", id="compare"):
                gr.Markdown("Two models, or one model at two precisions or runtimes, on the same image, with their agreement Dice.")
                with gr.Row():
                    with gr.Column(scale=1):
                        c_image = _upload_widget(gr, label="Dermoscopy image", sources=sources, elem_id="compare-image")
                        with gr.Row():
                            with gr.Column():
                                gr.Markdown("**A**")
                                a_controls = model_controls("a-", 0)
                            with gr.Column():
                                gr.Markdown("**B**")
                                b_controls = model_controls("b-", 1)
                        c_threshold = gr.Slider(0.0, 1.0, value=state.threshold, step=0.01, label="Threshold", elem_id="compare-threshold")
                        c_run = gr.Button("Compare", variant="primary", elem_id="compare")
                    with gr.Column(scale=2):
                        with gr.Row():
                            c_a = gr.Image(label="A", format="png", interactive=False, elem_id="overlay-a")
                            c_b = gr.Image(label="B", format="png", interactive=False, elem_id="overlay-b")
                            c_agree = gr.Image(label="Agreement", format="png", interactive=False, elem_id="agreement")
                        c_summary = gr.Markdown(label="Summary", elem_id="compare-summary")
                        with gr.Accordion("Details (JSON)", open=False):
                            c_details = gr.JSON(label="Details", elem_id="compare-details")
                c_run.click(guarded(compare), [c_image, *a_controls, *b_controls, c_threshold], [c_a, c_b, c_agree, c_summary, c_details],
                            api_name="compare", concurrency_limit=2)
        gr.Markdown(f"<small>{DISCLAIMER} Images stay on this machine: nothing is sent anywhere; uploads are deleted "
                    f"after {CACHE_SECONDS[1] // 60} minutes and when the demo stops.</small>")
    return blocks


class DemoServer:
    """A running demo: ``url``; ``close()`` stops the server, closes every predictor and deletes the uploads
    (idempotent)."""

    def __init__(self, blocks: Any, state: DemoState, url: str, upload_dir: str) -> None:
        self.blocks = blocks
        self.state = state
        self.url = url
        self.upload_dir = upload_dir
        self._closed = False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.blocks.close(verbose=False)
        finally:
            self.state.cache.close()
            shutil.rmtree(self.upload_dir, ignore_errors=True)
            if os.environ.get(_UPLOAD_ENV) == self.upload_dir:
                del os.environ[_UPLOAD_ENV]


def serve(state: DemoState, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> DemoServer:
    """Start the page on ``host:port`` in background threads; LightsegError (one line) when the port is taken."""
    gr = import_gradio()
    # Uploads and results go to a folder of this server's own (mode 0700), deleted at shutdown: patient images do
    # not linger in the shared /tmp/gradio. Gradio reads the variable when the page and its routes are created.
    upload_dir = tempfile.mkdtemp(prefix="lightseg-demo-")
    before = os.environ.get(_UPLOAD_ENV)
    os.environ[_UPLOAD_ENV] = upload_dir
    try:
        return _launch(gr, state, host, port, upload_dir)
    except BaseException:
        shutil.rmtree(upload_dir, ignore_errors=True)
        if before is None:
            os.environ.pop(_UPLOAD_ENV, None)
        else:
            os.environ[_UPLOAD_ENV] = before
        raise


def _launch(gr: Any, state: DemoState, host: str, port: int, upload_dir: str) -> DemoServer:
    from ..errors import LightsegError

    blocks = build_app(state)
    theme = gr.themes.Default()  # its fonts ship with Gradio: the page loads nothing from a CDN
    try:
        _, url, _ = blocks.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=True, inbrowser=False,
                                  show_error=False, quiet=True, max_file_size=MAX_UPLOAD_BYTES, ssr_mode=False, pwa=False,
                                  mcp_server=False, footer_links=["api"], theme=theme, enable_monitoring=False)
    except OSError as exc:
        if exc.filename is not None:
            raise
        why = "the port is in use (or not allowed); pick another with --port" if "empty port" in str(exc) else " ".join(str(exc).split())
        raise LightsegError(f"cannot serve on {host}:{port}: {why}") from None
    return DemoServer(blocks, state, url, upload_dir)
