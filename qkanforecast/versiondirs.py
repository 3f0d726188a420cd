"""Version and staging directories on disk: what the registry writes into them, how a staging directory
is named so that a left-over one can be told from a live one, and removal that deletes only the registry's
own files, never through a symbolic link.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import stat
import time
from pathlib import Path

from qkanforecast.errors import QKANForecastError, excerpt

MANIFEST = "manifest.json"
WEIGHTS = "model.pt"
SCALER = "scaler.parquet"  # format 4: the per-series scaler statistics
OWNED = frozenset({WEIGHTS, MANIFEST, SCALER})  # all a version directory holds; rm removes nothing else
STALE_SECONDS = 3600  # a staging directory this old is left over whoever made it (publishing takes ~1 s)
# .staging-<pid>@<host>-<token>: who is publishing, so that a stale one (its process gone) can be removed;
# also the older .staging-<random> of mkdtemp
STAGING = re.compile(r"^\.staging-(?:(?P<pid>[0-9]+)@(?P<host>[A-Za-z0-9._-]*)-)?[A-Za-z0-9_]+$")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())[:64]


def staging_name() -> str:
    """A hidden directory name that says which process on which machine is publishing into it."""
    return f".staging-{os.getpid()}@{_host()}-{secrets.token_hex(4)}"


def is_stale(path: Path) -> bool:
    """A staging directory left by a publish or removal that was killed: its process is gone (same
    machine), or it is older than any publish takes."""
    m = STAGING.match(path.name)
    if not m:
        return False
    try:
        if time.time() - path.lstat().st_mtime > STALE_SECONDS:
            return True
    except FileNotFoundError:
        return False
    if m.group("pid") is None or m.group("host") != _host():
        return False
    pid = int(m.group("pid"))
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists, owned by someone else
        return False
    return False


def check_owned(path: Path) -> None:
    """Refuse to remove ``path`` unless it is a real directory holding only files the registry writes."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        raise QKANForecastError(f"{path}: does not exist") from None
    if stat.S_ISLNK(info.st_mode):
        raise QKANForecastError(
            f"{path}: is a symbolic link, not a version the registry wrote; nothing was removed "
            "(remove the link yourself)"
        )
    if not stat.S_ISDIR(info.st_mode):
        raise QKANForecastError(f"{path}: is not a directory; nothing was removed")
    foreign = sorted(
        child.name for child in os.scandir(path)
        if child.name not in OWNED or not (child.is_file(follow_symlinks=False) or child.is_symlink())
    )  # a link named like our files is removed as a link (its target is never touched)
    if foreign:
        listing = ", ".join(excerpt(f, 40) for f in foreign[:3]) + (" ..." if len(foreign) > 3 else "")
        raise QKANForecastError(
            f"{path}: holds {listing}, which the registry did not write; nothing was removed "
            "(move them out first)"
        )


def delete_owned(path: Path) -> None:
    """Delete a directory that ``check_owned`` accepted: its own files, then the directory."""
    for child in OWNED:
        (path / child).unlink(missing_ok=True)
    path.rmdir()
