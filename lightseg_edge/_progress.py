"""Progress bars and time estimates the CLIs share (stdlib only, Python 3.8 compatible, no torch).

Bars are tqdm's, on stderr, so stdout keeps only results. tqdm comes with the train and export extras; a device with
only the runtime layer may lack it, and a missing bar must never stop the work it reports on: there it is a silent
stand-in with the same methods.
"""

from __future__ import annotations

from typing import Any


class _NoBar:
    """What ``progress_bar`` returns when no bar is shown: every call does nothing."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "_NoBar":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress_bar(total: int, desc: str, unit: str = "img", enabled: bool = True) -> Any:
    """A tqdm bar with rate and ETA on stderr, or a stand-in that shows nothing (``enabled`` False, or no tqdm)."""
    if enabled:
        try:
            from tqdm import tqdm
        except ImportError:
            pass
        else:
            return tqdm(total=total, desc=desc, unit=unit)
    return _NoBar()


def format_duration(seconds: float) -> str:
    """``42s``, ``3m07s``, ``2h05m``: short enough for a progress line, exact enough to plan by."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
