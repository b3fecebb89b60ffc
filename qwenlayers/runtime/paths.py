"""Where qwenlayers keeps caches and run outputs (platformdirs; override with QWENLAYERS_CACHE_DIR).

The cache holds what later runs execute or trust: the pypto overlay put first on the worker's
PYTHONPATH, the calculator library loaded with ctypes, tuned plans, calibrations, run folders.
So, as ssh and pip do for their folders, every folder of the cache must belong to the user
running qwenlayers and be writable by no one else; another user's folder, or a group- or
world-writable one, is refused with what is wrong and how to fix it. A cache that is not
writable is said to be so, with where to point QWENLAYERS_CACHE_DIR, instead of an OSError.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import platformdirs

from qwenlayers.errors import InputError

CACHE_ENV = "QWENLAYERS_CACHE_DIR"


class CacheWarning(UserWarning):
    """A cache entry could not be read and was treated as absent."""


def _check_private(path: Path) -> None:
    """Refuse a cache folder another user owns or that others can write."""
    info = path.stat()
    uid = os.getuid()
    if info.st_uid != uid:
        raise InputError(
            f"cache folder {path} belongs to uid {info.st_uid}, not to you (uid {uid}); qwenlayers runs code and "
            f"libraries from its cache, so it uses only a cache you own. Point {CACHE_ENV} at a folder of your own")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise InputError(
            f"cache folder {path} is writable by {'others' if info.st_mode & stat.S_IWOTH else 'its group'} "
            f"(mode {stat.S_IMODE(info.st_mode):o}); qwenlayers runs code and libraries from its cache, so it must be "
            f"writable by you alone: chmod go-w {path}, or point {CACHE_ENV} at a private folder")


def _private_dir(path: Path) -> Path:
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the cache folder {path}: {exc.strerror or exc}. Point {CACHE_ENV} at a "
                         f"writable folder of your own") from None
    _check_private(path)
    return path


def cache_root() -> Path:
    root = os.environ.get(CACHE_ENV) or platformdirs.user_cache_dir("qwenlayers")
    return _private_dir(Path(root))


def cache_dir(*parts: str) -> Path:
    """A folder inside the cache, created private if missing; each level is checked."""
    path = cache_root()
    for part in parts:
        path = _private_dir(path / part)
    return path


def results_dir(kind: str) -> Path:
    """Where a command keeps its results when not told (``bench``, ``generate``): the user data
    dir, not the cache, since these are outputs to read and keep, not state to trust."""
    return Path(platformdirs.user_data_dir("qwenlayers")) / kind


def writable_dir(path: Path, what: str) -> Path:
    """``path`` created if missing and checked writable, before any work goes into results that
    could not be kept; an OSError becomes an InputError saying which folder and why."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(prefix=".qwenlayers-probe-", dir=path):
            pass
    except OSError as exc:
        raise InputError(f"{what} {path} cannot be written ({exc.strerror or exc}); pass a folder you can write "
                         "(--results DIR)") from None
    return path


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``path`` so a reader sees the old or the new text, never a part (temp file + rename)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_json(path: Path, what: str) -> Any | None:
    """A JSON cache entry, or None (with one warning naming the file) when it is missing or
    unreadable: a broken cache entry is a cache miss, not a failure of every run."""
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        warnings.warn(f"ignoring the unreadable {what} {path} ({exc}); it is treated as absent and rewritten on the "
                      f"next save", CacheWarning, stacklevel=2)
        return None


@contextlib.contextmanager
def file_lock(path: Path, *, shared: bool = False) -> Iterator[None]:
    """An inter-process lock (parallel tox envs share one cache): exclusive for writers, shared
    for readers. Where the lock file cannot be created (a read-only cache), readers go on
    unlocked: nothing writes there either."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, "a+")
    except OSError:
        if shared:
            yield
            return
        raise InputError(f"cannot create the lock file {path}: the cache is not writable. Point {CACHE_ENV} at a "
                         f"writable folder of your own") from None
    with fh:
        fcntl.flock(fh, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
