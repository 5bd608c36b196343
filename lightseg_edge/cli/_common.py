"""What every CLI shares: LightsegError -> 'error: ...' on stderr and exit code 2; argument validators with one
wording per rule; logging set-up."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from .._atomic import check_output_dir
from .._defaults import default_data_dir  # noqa: F401  (the CLIs' --data default)
from .._hashing import shown
from ..errors import LightsegError, OutputError
from ..types import MAX_BATCH, MAX_INPUT_SIDE, MAX_SEED, MAX_THREADS, MAX_WORKERS, TTA


MAX_LINE = 500


def _one_line(text: str) -> str:
    # Library text inside a message (ONNX Runtime, protobuf, torch) can span lines; the CLI contract is one line, and
    # a readable one: a 4,000-character path or key list keeps its start (the culprit) and its end (what to do).
    text = " ".join(text.split())
    return text if len(text) <= MAX_LINE else f"{text[:MAX_LINE // 2 - 3]} ... {text[-(MAX_LINE // 2 - 2):]}"


def run_cli(body: Callable[[List[str]], int], argv: Optional[List[str]], keep_memory: bool = False) -> int:
    """``keep_memory``: a command that only trains or evaluates keeps the memory it frees (``train.allocator``) when it
    runs as a process of its own (``argv`` None), never inside a caller's process (e.g. ``main([...])`` in a test)."""
    if keep_memory and argv is None:
        from ..train.allocator import keep_freed_memory

        print(keep_freed_memory())
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return body(argv)
    except LightsegError as exc:
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:
        # Safety net for a file-system error no reader or writer translated. Only one that names its file: that is
        # about the user's disk or paths (a read as much as a write, so no advice beyond the OS's reason); an
        # OSError without a file (a socket, a subprocess) may be a bug and keeps its traceback.
        if exc.filename is None:
            raise
        print(f"error: {_one_line(f'{shown(exc.filename)}: {exc.strerror or exc}')}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if not _out_of_memory(exc):
            raise  # a bug: keep its traceback
        print(f"error: out of memory ({_one_line(str(exc) or type(exc).__name__)[:200]}); use a smaller --batch-size or --img-size, "
              f"or free memory", file=sys.stderr)
        return 2


_OOM_TEXT = ("can't allocate memory", "Insufficient memory", "out of memory", "bad_alloc")


def _out_of_memory(exc: BaseException) -> bool:
    """MemoryError, or a library's own words for it (torch's CPU allocator raises RuntimeError, OpenCV cv2.error)."""
    return isinstance(exc, MemoryError) or any(t in str(exc) for t in _OOM_TEXT)


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s")


def _number(kind: type, low: float, inclusive: bool, words: str, high: Optional[float] = None) -> Callable[[str], float]:
    """An argparse type: a finite number of ``kind`` above ``low`` (or at it, when ``inclusive``) and at most ``high``,
    with one rule's words. inf is refused like nan: no setting here means "forever" (--min-time inf never ends)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {words}, got {text!r}") from None
        if not math.isfinite(value) or value < low or (value == low and not inclusive) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {words}, got {text!r}")
        return value

    parse.__name__ = words  # argparse names the type in its messages
    return parse


positive_int = _number(int, 0, False, "a positive integer")
non_negative_int = _number(int, 0, True, "an integer >= 0")
positive_float = _number(float, 0.0, False, "a positive number")
non_negative_float = _number(float, 0.0, True, "a number >= 0")
thread_count = _number(int, 0, False, f"a positive integer up to {MAX_THREADS}", high=MAX_THREADS)
worker_count = _number(int, 0, True, f"an integer in 0..{MAX_WORKERS}", high=MAX_WORKERS)
seed_value = _number(int, 0, True, f"an integer in 0..{MAX_SEED}", high=MAX_SEED)
batch_size = _number(int, 0, False, f"a positive integer up to {MAX_BATCH}", high=MAX_BATCH)
img_size = _number(int, 0, False, f"a positive integer up to {MAX_INPUT_SIDE}", high=MAX_INPUT_SIDE)


def positive_int_list(text: str) -> Tuple[int, ...]:
    """``"1,8,32"`` -> (1, 8, 32): positive integers separated by commas; repeats dropped, order kept."""
    try:
        values = tuple(dict.fromkeys(int(t) for t in text.split(",")))
    except ValueError:
        values = ()
    if not values or min(values) < 1 or max(values) > MAX_BATCH:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas (e.g. 1,8,32), each at most {MAX_BATCH}, got {text!r}")
    return values


def probability(text: str) -> float:
    words = f"expected a probability in [0, 1], got {text!r}"
    try:
        value = non_negative_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(words) from None
    if value > 1:
        raise argparse.ArgumentTypeError(words)
    return value


def add_tta_argument(p: argparse.ArgumentParser) -> None:
    """``--tta``, as lightseg-predict, -eval, -serve and -bench take it (``types.TTA``)."""
    p.add_argument("--tta", default=TTA.NONE.value, choices=[t.value for t in TTA],
                   help="test-time augmentation: 'flips' averages the logits over the image and its three flips (4 network runs)")


def _not_empty(text: str, what: str) -> None:
    # Path("") is the current folder: an empty value (a shell variable that was never set) must not mean "here"
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected {what}, got an empty value")


def existing_file(text: str) -> str:
    _not_empty(text, "an existing file")
    path = Path(text)
    if not path.is_file():
        found = "a folder" if path.is_dir() else "not a regular file" if path.exists() else "nothing there"
        raise argparse.ArgumentTypeError(f"expected an existing file, got {text!r} ({found})")
    return text


def existing_dir(text: str) -> str:
    _not_empty(text, "an existing folder")
    path = Path(text)
    if not path.is_dir():
        found = "a file" if path.exists() else "nothing there"
        raise argparse.ArgumentTypeError(f"expected an existing folder, got {text!r} ({found})")
    return text


def output_dir(text: str) -> str:
    """An output folder that exists or can be created: neither it nor a parent is a file (checked before any work)."""
    _not_empty(text, "an output folder")
    try:
        check_output_dir(text)
    except OutputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def check_model(name: str):
    """The registry config of ``--model``; an unknown name lists the known ones. Checked after parsing, not as an
    argparse type, so ``main()`` returns 2 like for every other LightsegError. Imports torch (the model zoo)."""
    from ..errors import UnknownModelError
    from ..models import get_model_config

    try:
        return get_model_config(name)
    except UnknownModelError as exc:
        raise UnknownModelError(f"--model: {exc}") from None


def choice_list(allowed: Tuple[str, ...], aliases: Optional[dict] = None) -> Callable[[str], Tuple[str, ...]]:
    """An argparse type: a comma-separated subset of ``allowed`` (case-insensitive, repeats dropped)."""

    def parse(text: str) -> Tuple[str, ...]:
        items = [(aliases or {}).get(t.strip().lower(), t.strip().lower()) for t in text.split(",")]
        unknown = [t for t in items if t not in allowed]
        if unknown or not items:
            raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {','.join(allowed)}, got {text!r} "
                                             f"({', '.join(repr(t) for t in unknown)} unknown)")
        return tuple(dict.fromkeys(items))

    return parse
