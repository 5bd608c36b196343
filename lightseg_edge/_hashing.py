"""File hashing, and the integrity rules for files a manifest names (stdlib only, Python 3.8 compatible).

The rules live here, once, because every reader applies them: ``lightseg_edge.manifest`` (export, ``load_predictor``
and ``lightseg-bench``) and the PyTorch runtime's weights check. A named file must stay inside its
folder after symlinks are resolved, and must carry a well-formed sha256 that the file's bytes match before use.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path
from typing import Optional, Union

from .errors import ManifestError

_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def sha256_file(path: Union[str, Path]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks so large engines and weights never load whole; for a folder (a Core
    ML .mlpackage), the sha256 of its sorted '<relative path> <sha256>' lines, so any renamed or changed member shows."""
    if os.path.isdir(path) and not os.path.islink(path):
        return _sha256_tree(Path(path))
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sha256_tree(root: Path) -> str:
    lines = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            member = Path(dirpath) / name
            if member.is_symlink():  # a link inside the package could point anywhere: the package is refused
                raise OSError(f"{member} is a symbolic link inside a package folder")
            if member.is_file():
                lines.append(f"{member.relative_to(root).as_posix()} {sha256_file(member)}\n")
    return hashlib.sha256("".join(sorted(lines)).encode()).hexdigest()


def brief_repr(value: object, limit: int = 200) -> str:
    """A value for a one-line message: its repr, middle cut out when long (the end of a path names the file)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit // 2 - 2]}...{text[-(limit // 2 - 1):]}"


def shown(path: object) -> str:
    """A path for a one-line message: as is, or quoted with escapes when it holds a newline or other control text."""
    text = str(path)
    return text if text.isprintable() else repr(text)


def path_argument(value: object, what: str) -> Path:
    """``value`` as a Path, for an API argument that names a file: ``None``, a number or an empty string (which
    ``Path`` reads as the current folder) is an InvalidInputError naming the argument, not a TypeError or a read of '.'."""
    from .errors import InvalidInputError

    if not isinstance(value, (str, os.PathLike)) or not str(value):
        got = "an empty string" if isinstance(value, str) else type(value).__name__
        raise InvalidInputError(f"{what}: expected a file path (str or pathlib.Path), got {got}")
    return Path(value)


def check_sha256(value: object, what: str, where: Union[str, Path]) -> str:
    """``value`` as a lowercase hex sha256; a missing, null or malformed digest is refused (nothing loads unverified)."""
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise ManifestError(
            f"{where}: {what} needs a 'sha256' of 64 hex digits, found {brief_repr(value)}; "
            f"re-run lightseg-export so the manifest records every file's hash"
        )
    return value.lower()


def member_path(folder: Union[str, Path], name: object, what: str, where: Union[str, Path]) -> Path:
    """The resolved path of ``name`` inside ``folder``; ManifestError when it is not a relative name that stays inside.

    The name is checked as written (no absolute path, no '..') and again after resolving symlinks, since a symlink
    inside the folder can point anywhere. The resolved path is returned so later checks and opens use that file.
    """
    rel = Path(name) if isinstance(name, str) and name and "\x00" not in name else None
    if rel is None or not rel.parts or rel.is_absolute() or ".." in rel.parts:
        raise ManifestError(
            f"{where}: {what}: path {brief_repr(name)} must be relative to the export folder and stay inside it; "
            f"expected a file name relative to the folder such as 'model.onnx'"
        )
    try:
        root = Path(folder).resolve()
        full = (root / rel).resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
        raise ManifestError(f"{shown(where)}: {what}: cannot resolve {brief_repr(name)} ({type(exc).__name__}: {exc}); fix or remove the link") from exc
    try:
        full.relative_to(root)
    except ValueError:
        raise ManifestError(
            f"{where}: {what}: {brief_repr(name)} resolves to {shown(full)}, outside the export folder {shown(root)} (a symlink?); "
            f"copy the real file into the folder"
        ) from None
    if full == root:
        raise ManifestError(f"{where}: {what}: path {brief_repr(name)} names the export folder itself, not a file in it")
    return full


def is_regular_file(path: Path) -> bool:
    """``path.is_file()`` that also answers False for a name the OS refuses (too long, ...), instead of raising."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def artifact_bytes(path: Path) -> int:
    """Size of a file, or of every file in a package folder."""
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def is_artifact(path: Path) -> bool:
    """A regular file, or a package folder (Core ML's .mlpackage is a directory)."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return False
    return stat.S_ISREG(mode) or (stat.S_ISDIR(mode) and path.suffix == ".mlpackage")


def file_problem(path: Path, sha256: str) -> Optional[str]:
    """None when ``path`` is a regular file whose bytes hash to ``sha256``; else one line saying what is wrong."""
    if not is_artifact(path):
        return f"{shown(path)}: the manifest lists this file but it is missing; copy the export folder again or re-run lightseg-export"
    try:
        got = sha256_file(path)
        size = artifact_bytes(path)
    except OSError as exc:
        return f"{shown(path)}: cannot read it to check its sha256 ({exc.strerror or exc})"
    if got != sha256.lower():
        return (
            f"{shown(path)}: sha256 {got[:12]}... does not match the manifest's {sha256[:12]}... ({size} bytes); the file is "
            f"truncated, corrupted or from another export. Copy the export folder again or re-run lightseg-export"
        )
    return None


def verify_file(path: Path, sha256: str) -> None:
    """Raise ManifestError unless ``path`` exists and matches ``sha256``."""
    problem = file_problem(path, sha256)
    if problem is not None:
        raise ManifestError(problem)
