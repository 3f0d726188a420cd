"""File-system safety shared by the writers and the registry: check before the work, fail cleanly after.

- ``check_output``: an output path is a file name in a writable directory, checked before a command
  spends minutes on the work that it would write (not a directory, no trailing ``/``).
- ``check_writable``: the same for a directory that will be created or written into (the registry).
- ``storage_error``: an ``OSError`` from writing (disk full, quota, read-only file system) as one user
  error naming the target, never the temporary file it happened in.
- ``read_regular``: a small file read only when it is a regular file (not a symbolic link, a FIFO or
  ``/dev/zero``) and only up to a size limit.
- ``write_synced``: bytes written and flushed to the disk, so a rename after it publishes whole files.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from qkanforecast.errors import QKANForecastError

# errors that mean "this location cannot take the data", whatever the operation was
STORAGE_ERRNOS = frozenset(
    e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EFBIG, errno.EROFS, errno.EIO,
                errno.EACCES, errno.EPERM)
    if e is not None
)


def storage_error(target: str | os.PathLike[str], exc: OSError) -> QKANForecastError:
    """``exc`` (raised while writing ``target``) as a user error that names ``target``."""
    reason = exc.strerror or str(exc)
    return QKANForecastError(f"{target}: cannot write ({reason}); nothing was written")


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (the directory a ``mkdir -p`` would write into)."""
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(".")


def check_writable(folder: str | os.PathLike[str], what: str = "directory") -> None:
    """Refuse a directory that cannot be created or written to, before any work starts."""
    folder = Path(folder)
    existing = _nearest_existing(folder)
    if not existing.is_dir():
        raise QKANForecastError(f"{folder}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        detail = "" if existing == folder else f" ({existing} does not allow creating it)"
        raise QKANForecastError(f"{folder}: the {what} is not writable{detail}")


def check_output(path: str | os.PathLike[str]) -> None:
    """Refuse an output path that cannot become a file: a directory, a name ending in ``/``, a missing or
    read-only directory. ``-`` (stdout) is always fine. A symbolic link is checked at its target."""
    text = os.fspath(path)
    if text == "-":
        return
    if text.endswith(("/", os.sep)) or (os.altsep and text.endswith(os.altsep)):
        raise QKANForecastError(f"{text}: is a directory name; give a file name, such as {text}forecast.csv")
    target = Path(os.path.realpath(text))  # a link is written through to its target
    if target.is_dir():
        raise QKANForecastError(f"{text}: is a directory; give a file name inside it")
    if not target.parent.is_dir():
        raise QKANForecastError(f"{text}: directory {target.parent} does not exist")
    if not os.access(target.parent, os.W_OK | os.X_OK):  # the file is replaced by a rename in there
        raise QKANForecastError(f"{text}: directory {target.parent} is not writable")


def read_regular(path: Path, limit: int) -> bytes:
    """The bytes of ``path``, refused unless it is a regular file (a symbolic link is refused too) of at
    most ``limit`` bytes."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)  # a FIFO never blocks
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP or path.is_symlink():
            raise QKANForecastError(f"{path}: is a symbolic link; only a regular file is read") from None
        raise
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise QKANForecastError(f"{path}: not a regular file")
        if info.st_size > limit:
            raise QKANForecastError(f"{path}: {info.st_size:,} bytes, more than the {limit:,} allowed")
        data = fh.read(limit + 1)
    if len(data) > limit:  # it grew while we read it
        raise QKANForecastError(f"{path}: more than the {limit:,} bytes allowed")
    return data


def write_synced(path: Path, data: bytes) -> None:
    """Create ``path`` (it must not exist) holding ``data``, flushed to the disk before returning."""
    with open(path, "xb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
