"""Atomic output for every file the CLIs write (stdlib only, Python 3.8 compatible, no torch).

A file is written to a hidden temporary file in its own folder and renamed over the target, so a reader never sees
half a file and an interrupted or failed write leaves the previous version intact. Any ``OSError`` on the way (full
disk, read-only file system, a file where a folder belongs) becomes one ``OutputError`` line that names the path and
says what to do, and the temporary file is removed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import time
import uuid
from pathlib import Path
from typing import Iterator, List, Optional, Union

from .errors import OutputError

PathLike = Union[str, "os.PathLike[str]"]

_HINTS = {  # what to do; the reason itself comes from strerror
    errno.ENOSPC: "free some space or write elsewhere",
    errno.EDQUOT: "free some space or write elsewhere",
    errno.EROFS: "write elsewhere",
    errno.EACCES: "write to a folder you have write permission for",
    errno.EPERM: "write to a folder you have write permission for",
    errno.ENOTDIR: "part of the path is a file, not a folder: choose another output folder",
    errno.EISDIR: "a folder of that name is in the way: remove it or choose another output path",
    errno.ENOENT: "its folder does not exist: create it first",
}


def describe_os_error(exc: OSError) -> str:
    """'<reason>; <what to do>' for an OSError, in one line."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    hint = _HINTS.get(exc.errno or 0)
    return f"{reason}; {hint}" if hint else reason


def _blocking_file(path: Path) -> Optional[Path]:
    """The path itself or the nearest existing ancestor, when that is a file rather than a folder."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


def check_output_dir(path: PathLike, flag: Optional[str] = None) -> Path:
    """Fail before any work when ``path`` cannot become a folder (it, or a parent, is an existing file)."""
    path = Path(path)
    blocker = _blocking_file(path)
    if blocker is not None:
        where = "it is an existing file" if blocker == path else f"its parent {blocker} is a file"
        label = f"{flag} {path}" if flag else str(path)
        raise OutputError(f"{label}: expected a folder to write into, but {where}; pass another {flag or 'output folder'} or move the file")
    return path


def make_dir(path: PathLike, flag: Optional[str] = None) -> Path:
    """Create the output folder ``path`` (and its parents); errors name it and, if given, the ``flag`` it came from."""
    path = check_output_dir(path, flag)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        label = f"{flag} {path}" if flag else str(path)
        raise OutputError(f"{label}: cannot create the folder ({describe_os_error(exc)})") from exc
    return path


def fsync_path(path: PathLike) -> None:
    """Flush a file (or, where the OS allows, a folder) to disk."""
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def replaced(path: PathLike, durable: bool = False) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed over ``path`` when the block succeeds and removed
    whatever happens, so readers see the old file or the whole new one. For libraries that write files themselves
    (``onnx.save``, ``torch.onnx.export``); ``durable`` fsyncs the file before the rename (a crash must not leave a
    renamed but empty file)."""
    path = Path(path)
    # A unique name: concurrent writers of one target must not share a temporary. The pid lets a later run tell a
    # killed writer's leftover from a live one (remove_stale_temporaries).
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        if durable:
            fsync_path(tmp)
        os.replace(str(tmp), str(path))
    finally:
        _remove_quietly(tmp)


def write_bytes_atomic(path: PathLike, data: Union[bytes, memoryview], durable: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (``replaced``); any OSError becomes one OutputError line.

    Callers serialise into memory first (``io.BytesIO``): a library writing into the file itself may turn the disk's
    OSError into its own exception type (torch.save raises RuntimeError), which no caller could tell from a bug.
    """
    path = Path(path)
    try:
        with replaced(path, durable) as tmp:
            # os.open, not mkstemp: the file gets the usual umask permissions instead of 0600
            with os.fdopen(os.open(str(tmp), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as f:
                f.write(data)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({describe_os_error(exc)})") from exc
    return path


def write_text_atomic(path: PathLike, text: str, durable: bool = False) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"), durable)


def _remove_quietly(tmp: Path) -> None:
    # Usually gone already (renamed into place, or never created); any other failure here must not mask the
    # error that brought us here.
    with contextlib.suppress(OSError):
        tmp.unlink()


_TEMPORARY = re.compile(r"^\..+\.(\d+)-[0-9a-f]{8}\.tmp$")
_STALE_AFTER_S = 60  # a live writer on another machine (a shared folder) touches its temporary more often than this


def remove_stale_temporaries(folder: PathLike) -> List[Path]:
    """Remove the temporaries of ``replaced`` in ``folder`` that a killed run left (power cut, SIGKILL): those whose
    process is gone from this machine and that have not changed for a minute. Never raises; returns what it removed."""
    removed = []
    try:
        entries = list(os.scandir(str(folder)))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        try:
            if not match or not entry.is_file(follow_symlinks=False) or time.time() - entry.stat().st_mtime < _STALE_AFTER_S:
                continue
            if _process_alive(int(match.group(1))):
                continue
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # someone else's process, or not a pid: not ours to judge
    return True
