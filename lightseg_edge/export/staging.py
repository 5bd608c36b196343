"""The export's output folder, replaced as a whole, in one step, or not at all.

1. The new content is assembled in a hidden staging folder *beside* the output folder,
   ``<parent>/.lightseg-export-XXXX/new``: the files the steps make, hard links to everything of the old folder the
   new export keeps (artifacts an in-place ``--from-onnx`` run reuses, the engine timing cache, the user's own files
   and subfolders; files only the old manifest lists are dropped, they describe another model or setting), and the
   manifest, written last and read back against the files' sha256.
2. Commit: the staging folder and the output folder are exchanged in one step (Linux ``renameat2`` with
   ``RENAME_EXCHANGE``), then the old content is removed, its manifest first.

Guarantee: after a failure, Ctrl-C, SIGKILL or power cut at any point, the output folder is either exactly the old
export (old manifest, old files) or the complete new one, never a mix and never a manifest describing files it did
not write. What a killed export leaves is hidden beside the folder (``.lightseg-export-*``, never read as an
export) and is finished or removed by the next export into the same folder. Where the OS or filesystem cannot
exchange folders (not Linux, some network filesystems), the swap is two renames: a kill between them leaves no output
folder until the next export into it rolls the complete new content forward.

Consequences: the output folder must not be a mount point and its parent must be writable (both checked before the
first step); a shell whose working folder is the output folder sees the old one until it runs ``cd .``; of concurrent
exports into one folder the last to commit wins.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import json
import os
import platform
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, List, Optional, Set

from .._atomic import fsync_path
from ..errors import ExportConfigError, ManifestError
from ..manifest import MANIFEST_NAME, listed_files, read_manifest, verify_artifacts, write_manifest

STAGING_PREFIX = ".lightseg-export-"
_OWNER = ".owner"  # "<host> <pid>" of the export writing into a staging folder
_TARGET = "target"  # the name of the output folder (beside the staging folder) it is assembling
_NEW = "new"  # inside a staging folder: the complete new content of the output folder
_OLD = "old"  # inside a staging folder: the previous content, moved aside by the two-rename swap
_ABANDONED_AFTER_S = 24 * 3600  # staging folders without an owner file (older versions) count as abandoned after this
_RENAME_EXCHANGE = 2  # <linux/fs.h>
_AT_FDCWD = -100
# renameat2's system call number, for a C library without the wrapper (glibc < 2.28, e.g. JetPack 4's Ubuntu 18.04)
_SYS_RENAMEAT2 = {"x86_64": 316, "aarch64": 276}


def _owner_gone(staging: Path) -> bool:
    try:
        host, pid = (staging / _OWNER).read_text().split()
    except (OSError, ValueError):
        return time.time() - staging.stat().st_mtime > _ABANDONED_AFTER_S
    if host != socket.gethostname():
        return False  # another machine's export on a shared folder: not ours to judge
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError):
        return False
    return False


def _target(staging: Path) -> Optional[str]:
    try:
        return (staging / _TARGET).read_text().strip()
    except OSError:
        return None


def _discard(staging: Path) -> None:
    """Remove a staging folder, manifests first: a half-removed copy of an export must never read as one."""
    for part in (_NEW, _OLD):
        try:
            os.unlink(staging / part / MANIFEST_NAME)
        except OSError:
            pass
    shutil.rmtree(staging, ignore_errors=True)


def _remove_abandoned_staging(out: Path) -> None:
    """What killed exports into ``out`` left (their process is gone) is finished or removed by the next export:
    staging folders beside ``out``, and inside it where older versions staged."""
    for staging in out.glob(f"{STAGING_PREFIX}*") if out.is_dir() else ():
        if staging.is_dir() and _owner_gone(staging):
            shutil.rmtree(staging, ignore_errors=True)
    for staging in out.parent.glob(f"{STAGING_PREFIX}*"):
        if staging.is_dir() and _target(staging) == out.name and _owner_gone(staging):
            if (staging / _OLD).is_dir() and (staging / _NEW).is_dir() and not out.exists():
                # killed between the two renames of a swap: the new content was complete and verified, so it goes in
                os.rename(staging / _NEW, out)
            _discard(staging)


@functools.lru_cache(maxsize=None)
def _renameat2() -> Optional[Callable[[bytes, bytes, int], int]]:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    fn = getattr(libc, "renameat2", None)
    if fn is not None:
        fn.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
        fn.restype = ctypes.c_int
        return lambda a, b, flags: fn(_AT_FDCWD, a, _AT_FDCWD, b, flags)
    number = _SYS_RENAMEAT2.get(platform.machine())
    if number is None:
        return None
    syscall = libc.syscall
    syscall.restype = ctypes.c_long
    return lambda a, b, flags: syscall(
        ctypes.c_long(number), ctypes.c_int(_AT_FDCWD), ctypes.c_char_p(a), ctypes.c_int(_AT_FDCWD), ctypes.c_char_p(b), ctypes.c_uint(flags)
    )


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders in one step; False where the OS or the filesystem cannot (the caller falls back)."""
    fn = _renameat2()
    if fn is None:
        return False
    if fn(os.fsencode(str(a)), os.fsencode(str(b)), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap(new: Path, out: Path, staging: Path) -> None:
    """Make ``new`` the output folder; the previous content ends up inside ``staging`` (removed afterwards)."""
    if _exchange(new, out):
        return
    # Two renames: a kill between them leaves no output folder, and the next export rolls forward (see above).
    os.rename(out, staging / _OLD)
    os.rename(new, out)


def _superseded(out: Path, manifest: dict) -> Set[str]:
    """Files of the previous export that the new one does not list: they belong to another model or setting, and left
    beside the new manifest they would be mixed up with it."""
    try:
        old = json.loads((out / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    return listed_files(old) - listed_files(manifest)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # a filesystem without hard links
        shutil.copy2(src, dst)


def _carry_folder(old: Path, src: Path, dst: Path, drop: Set[str]) -> None:
    """A folder, less the superseded files in it (a Triton repository of the previous export); a folder left empty
    by that is not carried over."""

    def superseded(folder: str, names: List[str]) -> Set[str]:
        rel = Path(folder).relative_to(old)
        return {n for n in names if (rel / n).as_posix() in drop}

    shutil.copytree(str(src), str(dst), symlinks=True, copy_function=_link_or_copy, ignore=superseded)
    for folder, _, _ in sorted(os.walk(str(dst)), key=lambda w: -len(w[0])):  # deepest first
        with contextlib.suppress(OSError):
            os.rmdir(folder)  # only an empty one


def _carry_over(old: Path, new: Path, drop: Set[str]) -> None:
    """Hard-link into ``new`` everything of ``old`` the new export does not replace (artifacts it keeps, the engine
    timing cache, the user's own files and folders), so that swapping the folders loses nothing."""
    for entry in os.scandir(str(old)):
        name = entry.name
        if (
            name in drop
            or name == MANIFEST_NAME
            or name.startswith(STAGING_PREFIX)
            or (name.startswith(f".{MANIFEST_NAME}.") and name.endswith(".tmp"))  # a killed manifest write (older versions)
            or os.path.lexists(str(new / name))
        ):
            continue
        if entry.is_symlink():
            os.symlink(os.readlink(entry.path), str(new / name))
        elif entry.is_dir():
            _carry_folder(old, Path(entry.path), new / name, drop)
        else:
            _link_or_copy(entry.path, str(new / name))


def _fsync_dir(path: Path) -> None:
    try:
        fsync_path(path)
    except OSError:  # not every OS opens or syncs folders; the files themselves are synced
        pass


def _working_inside(folder: Path) -> Optional[str]:
    try:
        cwd = os.getcwd()
    except OSError:
        return None
    return cwd if cwd == str(folder) or cwd.startswith(str(folder) + os.sep) else None


class Staging:
    """The new content of the output folder, made in a hidden staging folder beside it; ``commit`` completes it
    (carried-over files, the manifest last) and swaps it in. See the module docstring for the guarantee."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.target = Path(os.path.realpath(str(out)))  # a symlinked output folder: the folder it points to is replaced
        self.created: List[Path] = []
        self.root: Optional[Path] = None
        self.dir = out

    def __enter__(self) -> "Staging":
        if os.path.ismount(str(self.target)):
            raise ExportConfigError(
                f"--output {self.out}: is a mount point; the export replaces its output folder as a whole, so name a folder inside it"
            )
        missing = []
        p = self.target
        while not p.exists() and p != p.parent:
            missing.append(p)
            p = p.parent
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            self.created = missing
            _remove_abandoned_staging(self.target)
            self.target.mkdir(exist_ok=True)
        except OSError as exc:
            self._cleanup_dirs()
            raise ExportConfigError(f"--output {self.out}: cannot write to this folder ({exc.strerror or exc})") from exc
        try:
            self.root = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=str(self.target.parent)))
            (self.root / _OWNER).write_text(f"{socket.gethostname()} {os.getpid()}\n")
            (self.root / _TARGET).write_text(f"{self.target.name}\n")
            self.dir = self.root / _NEW
            self.dir.mkdir()
        except OSError as exc:
            self.__exit__(type(exc), exc, None)
            raise ExportConfigError(
                f"--output {self.out}: cannot write beside it in {self.target.parent} (the export is assembled there and swapped in "
                f"whole; {exc.strerror or exc})"
            ) from exc
        return self

    def commit(self, names: List[str], manifest: dict) -> Path:
        assert self.root is not None
        _carry_over(self.target, self.dir, _superseded(self.target, manifest))
        write_manifest(self.dir, manifest)
        problems = verify_artifacts(self.dir, read_manifest(self.dir))
        if problems:
            raise ManifestError(f"{self.out}: the new export does not verify: {'; '.join(problems)}")
        for name in names:  # on disk before the folder is swapped in: a power cut must not find it with empty files
            fsync_path(self.dir / name)
        _fsync_dir(self.dir)
        shutil.copymode(str(self.target), str(self.dir))
        cwd = _working_inside(self.target)
        _swap(self.dir, self.target, self.root)
        _fsync_dir(self.target.parent)
        if cwd is not None:  # this process keeps working in the new folder, not in the swapped-out old one
            os.chdir(cwd if os.path.isdir(cwd) else str(self.target))
        return self.out / MANIFEST_NAME

    def _cleanup_dirs(self) -> None:
        for d in self.created:  # deepest first: only folders this export created, and only if still empty
            try:
                d.rmdir()
            except OSError:
                break

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.root is not None:
            _discard(self.root)
            self.root = None
        if exc_type is not None:
            self._cleanup_dirs()


def recover_output(named: Optional[str]) -> None:
    """Finish what a killed export into the folder ``named`` left, before anything reads that folder (an in-place
    ``--from-onnx`` reads its input there). ``None``: the default folder, known only once the model is (``Staging``
    recovers it)."""
    if named is None:
        return
    out = Path(os.path.realpath(named))
    if out.parent.is_dir():
        try:
            _remove_abandoned_staging(out)
        except OSError as exc:
            raise ExportConfigError(f"--output {named}: cannot finish an interrupted export there ({exc.strerror or exc})") from exc
