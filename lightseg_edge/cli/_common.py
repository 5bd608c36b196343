"""What every CLI shares: LightsegError -> 'error: ...' on stderr and exit code 2; logging set-up."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, List, Optional

from ..errors import LightsegError


def run_cli(body: Callable[[List[str]], int], argv: Optional[List[str]]) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return body(argv)
    except LightsegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s")


def default_data_dir() -> Optional[str]:
    """``--data`` default: $LIGHTSEG_ISIC2018, else the shared ISIC 2018 copy beside a checkout, when present."""
    import os
    from pathlib import Path

    env = os.environ.get("LIGHTSEG_ISIC2018")
    if env:
        return env
    for cand in (Path.cwd() / "../shared/data/isic2018", Path(__file__).resolve().parents[3] / "shared/data/isic2018"):
        if cand.is_dir():
            return str(cand.resolve())
    return None


def _number(kind: type, low: float, inclusive: bool, words: str) -> Callable[[str], float]:
    """An argparse type: a number of ``kind`` above ``low`` (or at it, when ``inclusive``), with one rule's words."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {words}, got {text!r}") from None
        if value < low or (value == low and not inclusive) or value != value:
            raise argparse.ArgumentTypeError(f"expected {words}, got {text!r}")
        return value

    parse.__name__ = words  # argparse names the type in its messages
    return parse


positive_int = _number(int, 0, False, "a positive integer")
non_negative_int = _number(int, 0, True, "an integer >= 0")
positive_float = _number(float, 0.0, False, "a positive number")
non_negative_float = _number(float, 0.0, True, "a number >= 0")


def probability(text: str) -> float:
    value = non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1], got {text!r}")
    return value
