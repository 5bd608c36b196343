"""The predictor interface every runtime adapter implements, and the shared code around it.

An adapter only implements ``_infer`` (NCHW float32 in, NCHW logits out) and ``_close``. Everything a user sees is
here, once: input validation, pre/post-processing (through :mod:`lightseg_edge.data.transforms`, the same code
training and INT8 calibration use), batching, the lock, and the closed-state checks. That is what keeps the
adapters from drifting apart; ``tests/runtimes/test_conformance.py`` runs one suite against all of them.

Thread safety: ``infer`` and every ``predict*`` call may come from several threads. The backend call itself runs
under a per-predictor lock (TensorRT execution contexts, CUDA graphs and pinned staging buffers are not reentrant,
so one-at-a-time is enforced for every adapter alike); pre- and post-processing run outside it, in the calling
thread. For parallel throughput, create one predictor per thread.
"""

from __future__ import annotations

import functools
import numbers
import threading
from collections import abc
from typing import Iterable, List, Optional, Protocol, Sequence, Tuple, Union, runtime_checkable

import numpy as np

from .._hashing import shown
from ..data.transforms import check_image, logits_to_mask, logits_to_proba, preprocess_batch
from ..data.tta import averaged_logits, check_tta
from ..errors import InvalidInputError, PredictorClosedError
from ..types import MAX_THREADS, TTA, InputSpec, Precision, PreprocessConfig, Runtime

DEFAULT_THRESHOLD = 0.5


@runtime_checkable
class Predictor(Protocol):
    """What every ``load_predictor`` result offers, whatever runs underneath."""

    @property
    def runtime(self) -> Runtime: ...

    @property
    def input_spec(self) -> InputSpec: ...

    @property
    def preprocess_config(self) -> PreprocessConfig: ...

    def infer(self, batch: np.ndarray) -> np.ndarray: ...

    def predict(self, image: np.ndarray, threshold: Optional[float] = None, name: Optional[str] = None) -> np.ndarray: ...

    def predict_proba(self, image: np.ndarray, name: Optional[str] = None) -> np.ndarray: ...

    def predict_batch(self, images: Sequence[np.ndarray], threshold: Optional[float] = None,
                      names: Optional[Sequence[str]] = None) -> List[np.ndarray]: ...

    def close(self) -> None: ...


def check_threads(threads: object, low: int = 1) -> Optional[int]:
    """``threads=`` as a whole number in ``low``..MAX_THREADS (None: the backend's default). Checked here because a
    runtime turns a bad value into its own crash: torch.set_num_threads(0) raises RuntimeError, OpenMP aborts the
    process on 10**8 threads, ONNX Runtime reports std::bad_alloc as a model that cannot load."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or not low <= threads <= MAX_THREADS:
        raise InvalidInputError(f"threads={threads!r}: expected a whole number in {low}..{MAX_THREADS}")
    return int(threads)


def _check_threshold(threshold: float) -> float:
    try:
        # a string or bool is a mix-up (threshold="0.5" from a config file, True for "use the default"), not a number
        t = float("nan") if isinstance(threshold, (str, bytes, bool)) else float(threshold)
    except (TypeError, ValueError):
        t = float("nan")  # fails the range check below, with the same words
    if not 0.0 <= t <= 1.0:
        raise InvalidInputError(f"threshold must be a probability in [0, 1], got {threshold!r}")
    return t


@functools.lru_cache(maxsize=None)
def _single_threaded_opencv() -> None:
    """OpenCV's thread pool is switched off once a predictor exists (as Ultralytics does at import). The images a
    predictor resizes are small, and OpenCV's worker threads compete with the runtime's own (ONNX Runtime's keep
    spinning after each run): on 2 cores predict() took 1.15x inference alone with the pool, 1.11x without it
    (benchmarks/prepost.py, UCM-Net, 512x512). ``cv2.setNumThreads(n)`` afterwards sets it back."""
    try:
        import cv2
    except ImportError:  # OpenCV is a dependency; a broken install fails where it is used, with its own error
        return
    cv2.setNumThreads(1)


class BasePredictor:
    """Shared behaviour; adapters implement ``_infer(batch) -> logits`` and ``_close()``.

    ``infer``: validated raw call on a preprocessed NCHW float32 batch, returning NCHW float32 logits.
    ``predict`` / ``predict_proba``: one HxWx3 uint8 RGB image of any size -> HxW uint8 {0,1} mask / float32
    probabilities at that image's own resolution. ``predict_batch`` / ``predict_proba_batch``: a list of such images
    (sizes may differ), chunked to the model's batch limit.
    """

    runtime_kind: Runtime = Runtime.PYTORCH  # overridden by each adapter

    def __init__(self, input_spec: InputSpec, preprocess: PreprocessConfig, precision: Precision = Precision.FP32,
                 device: str = "cpu", threshold: float = DEFAULT_THRESHOLD, source: str = "",
                 max_batch_size: Optional[int] = None, tta: Union[str, TTA, None] = TTA.NONE) -> None:
        spec_hw = tuple(input_spec.shape[2:])
        if len(input_spec.shape) != 4 or input_spec.shape[1] != 3:
            raise InvalidInputError(f"{source or 'model'}: expected a (N, 3, H, W) input, the model declares {list(input_spec.shape)}")
        if all(isinstance(d, int) for d in spec_hw) and tuple(preprocess.size) != spec_hw:
            raise InvalidInputError(
                f"{source or 'model'}: preprocessing resizes to {tuple(preprocess.size)} but the model input is "
                f"{spec_hw} (H, W); the manifest/options disagree with the model file"
            )
        self._spec = input_spec
        self._pre = preprocess
        self._precision = Precision(precision)
        self._device = device
        self._threshold = _check_threshold(threshold)
        self._tta = check_tta(tta)
        self._source = source
        static_n = input_spec.shape[0]
        self._static_batch = int(static_n) if isinstance(static_n, int) and static_n > 0 else None
        self._max_batch = self._static_batch or max_batch_size
        self._lock = threading.Lock()
        self._closed = False
        _single_threaded_opencv()

    # -- description -------------------------------------------------------------------------------------------
    @property
    def runtime(self) -> Runtime:
        return self.runtime_kind

    @property
    def input_spec(self) -> InputSpec:
        return self._spec

    @property
    def preprocess_config(self) -> PreprocessConfig:
        return self._pre

    @property
    def precision(self) -> Precision:
        return self._precision

    @property
    def device(self) -> str:
        return self._device

    @property
    def threshold(self) -> float:
        return self._threshold

    @property
    def tta(self) -> TTA:
        """The test-time augmentation ``infer`` (and so every ``predict*``) applies."""
        return self._tta

    @property
    def source(self) -> str:
        return self._source

    @property
    def max_batch_size(self) -> Optional[int]:
        """The largest batch one ``infer`` call accepts (None: unlimited)."""
        return self._max_batch

    @property
    def static_batch_size(self) -> Optional[int]:
        """Set when the model was exported with a fixed batch: ``infer`` then needs exactly this many samples."""
        return self._static_batch

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        state = "closed" if self._closed else self._device
        tta = "" if self._tta is TTA.NONE else f", tta={self._tta.value}"
        return f"{type(self).__name__}({self._source!r}, {self.runtime.value}, {self._precision.value}, {state}, input={list(self._spec.shape)}{tta})"

    # -- raw inference ---------------------------------------------------------------------------------------------
    def _check_batch(self, batch: np.ndarray) -> None:
        name = self._spec.name
        want = ["N" if d is None else d for d in self._spec.shape]
        if not isinstance(batch, np.ndarray):
            raise InvalidInputError(f"input {name!r}: expected a numpy array float32 {want}, got {type(batch).__name__}")
        if batch.dtype != np.float32:
            raise InvalidInputError(
                f"input {name!r}: expected dtype float32 {want}, got {batch.dtype} {list(batch.shape)}"
                + (" - did you forget preprocess()? predict() takes raw uint8 images" if batch.dtype == np.uint8 else "")
            )
        if batch.ndim != 4:
            raise InvalidInputError(f"input {name!r}: expected a 4-D NCHW batch {want}, got shape {list(batch.shape)}")
        n = batch.shape[0]
        if n < 1:
            raise InvalidInputError(f"input {name!r}: empty batch (shape {list(batch.shape)}); expected at least one sample")
        for axis, (got, exp) in enumerate(zip(batch.shape, self._spec.shape)):
            if axis > 0 and exp is not None and got != exp:
                raise InvalidInputError(f"input {name!r}: expected shape {want}, got {list(batch.shape)} (axis {axis} is {got}, expected {exp})")
        if self._static_batch is not None and n != self._static_batch:
            raise InvalidInputError(
                f"input {name!r}: this model was exported with a fixed batch of {self._static_batch}, got {n}; "
                f"predict_batch() splits and pads automatically"
            )
        if self._max_batch is not None and n > self._max_batch:
            raise InvalidInputError(f"input {name!r}: batch of {n} exceeds this model's maximum of {self._max_batch}; predict_batch() splits automatically")

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Preprocessed NCHW float32 batch -> NCHW float32 logits (N, 1, H, W); with ``tta='flips'`` the mean over the
        four flipped views (four backend calls)."""
        if self._closed:
            raise PredictorClosedError(f"{self.runtime.value} predictor for {self._source!r}: infer() after close()")
        self._check_batch(batch)
        with self._lock:
            if self._closed:  # closed by another thread while this one waited
                raise PredictorClosedError(f"{self.runtime.value} predictor for {self._source!r}: infer() after close()")
            return averaged_logits(self._run, batch, self._tta)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """One backend call on a contiguous copy of ``batch`` (a flipped view is strided), its output checked."""
        out = np.asarray(self._infer(np.ascontiguousarray(batch)))
        n = batch.shape[0]
        if out.ndim != 4 or out.shape[0] != n or out.shape[1] != 1:
            raise InvalidInputError(f"{self._source}: the model returned shape {list(out.shape)}; expected logits ({n}, 1, H, W)")
        return out.astype(np.float32, copy=False)

    def _infer(self, batch: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- images ----------------------------------------------------------------------------------------------------
    def _chunks(self, n: int) -> Iterable[Tuple[int, int]]:
        step = self._max_batch or n
        for start in range(0, n, step):
            yield start, min(n, start + step)

    @staticmethod
    def _labels(n: int, names: Optional[Sequence[str]]) -> List[str]:
        """What an error calls each image: its file name when the caller gives names, else its index."""
        if names is None:
            return [f"image {i}" for i in range(n)]
        labels = [shown(name) for name in names] if not isinstance(names, (str, bytes)) else []  # one line each
        if len(labels) != n:
            got = "a single string" if isinstance(names, (str, bytes)) else f"{len(labels)} names"
            raise InvalidInputError(f"predict_batch: names= must give one name per image ({n}), got {got}")
        return labels

    def _logits_for(self, images: Sequence[np.ndarray], names: Optional[Sequence[str]] = None) -> List[np.ndarray]:
        if isinstance(images, np.ndarray) and images.ndim == 4:
            images = list(images)  # an NHWC uint8 stack is a sequence of images
        if not isinstance(images, abc.Sequence) or isinstance(images, (str, bytes)):
            one = isinstance(images, np.ndarray)
            got = f"an array of shape {images.shape} (one image? use predict())" if one else type(images).__name__
            raise InvalidInputError(f"predict_batch: expected a list of HxWx3 uint8 RGB images or an NxHxWx3 array, got {got}")
        if len(images) == 0:
            raise InvalidInputError("predict_batch: expected at least one image, got an empty sequence")
        for im, label in zip(images, self._labels(len(images), names)):
            check_image(im, what=label)
        out: List[np.ndarray] = []
        for start, stop in self._chunks(len(images)):
            x = preprocess_batch(images[start:stop], self._pre)
            k = x.shape[0]
            if self._static_batch is not None and k < self._static_batch:
                # Pad the last chunk with copies so a fixed-batch engine can run it; the padding rows are dropped.
                x = np.concatenate([x, np.repeat(x[-1:], self._static_batch - k, axis=0)])
            out.extend(self.infer(x)[:k])
        return out

    def predict_proba_batch(self, images: Sequence[np.ndarray], names: Optional[Sequence[str]] = None) -> List[np.ndarray]:
        """Each image -> HxW float32 lesion probabilities at its own resolution.

        ``names`` (e.g. the files the images came from) label the errors instead of "image <index>"."""
        logits = self._logits_for(images, names)
        return [logits_to_proba(lg, im.shape[:2]) for lg, im in zip(logits, images)]

    def predict_batch(self, images: Sequence[np.ndarray], threshold: Optional[float] = None,
                      names: Optional[Sequence[str]] = None) -> List[np.ndarray]:
        """Each image -> HxW uint8 mask in {0, 1} at its own resolution.

        ``names`` (e.g. the files the images came from) label the errors instead of "image <index>"."""
        t = self._threshold if threshold is None else _check_threshold(threshold)
        logits = self._logits_for(images, names)
        return [logits_to_mask(lg, im.shape[:2], t) for lg, im in zip(logits, images)]

    def predict_proba(self, image: np.ndarray, name: Optional[str] = None) -> np.ndarray:
        """HxWx3 uint8 RGB -> HxW float32 lesion probabilities. ``name`` labels errors (default "image")."""
        check_image(image, what=shown(name or "image"))
        return self.predict_proba_batch([image], names=[name or "image"])[0]

    def predict(self, image: np.ndarray, threshold: Optional[float] = None, name: Optional[str] = None) -> np.ndarray:
        """HxWx3 uint8 RGB -> HxW uint8 mask with values 0 (skin) / 1 (lesion), at the input's resolution.

        ``name`` (e.g. the file the image came from) labels errors (default "image")."""
        check_image(image, what=shown(name or "image"))
        return self.predict_batch([image], threshold, names=[name or "image"])[0]

    # -- lifecycle -------------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Release the backend (sessions, engines, device buffers). Idempotent; later calls raise PredictorClosedError."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._close()

    def _close(self) -> None:
        pass

    def __enter__(self):  # returns self (typing.Self is 3.11+)
        if self._closed:
            raise PredictorClosedError(f"{self.runtime.value} predictor for {self._source!r} is closed")
        return self

    def __exit__(self, *exc) -> None:
        self.close()
