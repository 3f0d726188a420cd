"""The checkpoint registry: ``<root>/<name>/v<N>/`` holding ``model.pt``, ``manifest.json`` and
``scaler.parquet``.

``model.pt`` is a plain state_dict (loaded with ``torch.load(weights_only=True)``); everything needed to
rebuild the model and check the input lives in ``manifest.json``, the per-series scaler statistics in
``scaler.parquet`` (format 4; older versions hold them in the manifest). Publishing writes a
hidden staging directory and renames it into place, so a killed run leaves no half-written version and
two runs publishing the same name at once get different version numbers. Removing deletes only what
publishing wrote, inside the root (``versiondirs``), and a broken version is listed as ``Invalid``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import pickle
import re
import sys
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from qkanforecast import __version__
from qkanforecast.errors import QKANForecastError, excerpt
from qkanforecast.files import (
    STORAGE_ERRNOS,
    check_writable,
    fsync_dir,
    read_regular,
    storage_error,
    write_synced,
)
from qkanforecast.manifest import FORMAT_VERSION, Manifest, ScalerFile, ScalerState, Weights, check_bounds
from qkanforecast.scaler_table import read_scaler, write_scaler
from qkanforecast.versiondirs import (
    MANIFEST,
    SCALER,
    WEIGHTS,
    check_owned,
    delete_owned,
    is_stale,
    staging_name,
)

MAX_MANIFEST_BYTES = 256 << 20  # a manifest holds a few numbers per series: 10,000 series are ~1 MB
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_VERSION = re.compile(r"^v([1-9][0-9]*)$")


def default_root() -> Path:
    """``$QKANFORECAST_HOME``, else the per-user data directory of this platform."""
    env = os.environ.get("QKANFORECAST_HOME")
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "qkanforecast"


def check_name(name: str) -> str:
    if not _NAME.match(name) or ".." in name:
        raise QKANForecastError(
            f"invalid model name {name!r}: use letters, digits, '.', '_' or '-', starting with a letter or "
            "digit (no '/', no '..')"
        )
    return name


def _check_sha256(path: Path, expected: str | None) -> None:
    if not path.is_file():
        raise QKANForecastError(f"{path.parent}: {path.name} is missing")
    actual = sha256_file(path)
    if actual != expected:
        raise QKANForecastError(
            f"{path}: sha256 {actual[:12]}… does not match the manifest ({str(expected)[:12]}…); "
            "the checkpoint is corrupt or was modified"
        )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Entry:
    """One registered version: where it is and what its manifest says."""

    name: str
    version: int
    path: Path
    manifest: Manifest

    @property
    def ref(self) -> str:
        return f"{self.name}@v{self.version}"

    def summary(self) -> dict[str, Any]:
        """One row of ``models list``."""
        m = self.manifest
        return {
            "ref": self.ref,
            "model": m.model.model,
            "parameters": m.num_parameters,
            "freq": m.schema.freq,
            "lookback": m.data.lookback,
            "horizon": m.data.horizon,
            "series": m.schema.series,
            "val_loss": m.training.val_loss,
            "created": m.created,
            "path": str(self.path),
        }


@dataclass(frozen=True)
class Invalid:
    """A version directory that cannot be loaded, and why: ``models list`` shows it, ``models rm`` removes
    it."""

    name: str
    version: int
    path: Path
    reason: str

    @property
    def ref(self) -> str:
        return f"{self.name}@v{self.version}"

    def summary(self) -> dict[str, Any]:
        return {"ref": self.ref, "invalid": self.reason, "path": str(self.path)}


@dataclass(frozen=True)
class Removed:
    """A version (or a left-over staging directory) that ``Registry.remove`` deleted."""

    ref: str
    path: Path


class Registry:
    def __init__(self, root: str | os.PathLike[str] | None = None):
        self.root = Path(root).expanduser() if root is not None else default_root()

    # -- reading -------------------------------------------------------------------------------------
    def versions(self, name: str) -> list[int]:
        folder = self.root / check_name(name)
        if not folder.is_dir():
            return []
        found = (_VERSION.match(p.name) for p in folder.iterdir() if p.is_dir())
        return sorted(int(m.group(1)) for m in found if m)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _NAME.match(p.name))

    def listing(self) -> list[Entry | Invalid]:
        """Every version, a broken one as ``Invalid`` with the reason (one never hides the others)."""
        rows: list[Entry | Invalid] = []
        for name in self.names():
            for v in self.versions(name):
                path = self.root / name / f"v{v}"
                try:
                    rows.append(self.get(f"{name}@v{v}", scaler=False))
                except QKANForecastError as exc:
                    reason = str(exc)
                    for prefix in (f"{path / MANIFEST}: ", f"{path}: "):
                        reason = reason.removeprefix(prefix)
                    rows.append(Invalid(name, v, path, reason))
        return rows

    def entries(self) -> list[Entry]:
        """Every version that loads."""
        return [e for e in self.listing() if isinstance(e, Entry)]

    def resolve(self, ref: str) -> Path:
        """Turn ``NAME``, ``NAME@latest``, ``NAME@vN`` or a version directory path into a directory."""
        if _is_path(ref):  # a bare name is never a path
            path = Path(ref).expanduser()
            if not (path / MANIFEST).is_file():
                raise QKANForecastError(f"{ref}: not a model version directory (no {MANIFEST})")
            return path
        name, _, version = ref.partition("@")
        check_name(name)
        versions = self.versions(name)
        if not versions:
            raise QKANForecastError(
                f"unknown model {name!r} in registry {self.root} (see `qkanforecast models list`)"
            )
        if version in ("", "latest"):
            return self.root / name / f"v{versions[-1]}"
        m = _VERSION.match(version)
        if not m:
            raise QKANForecastError(f"invalid reference {ref!r}: use NAME, NAME@latest or NAME@vN")
        if int(m.group(1)) not in versions:
            raise QKANForecastError(
                f"unknown version {ref!r}; {name} has " + ", ".join(f"v{v}" for v in versions)
            )
        return self.root / name / version

    def get(self, ref: str, scaler: bool = True) -> Entry:
        """Resolve a reference and read its manifest: a regular file of bounded size, validated against
        the typed schema (bounds included) after checking the format version.

        The manifest's ``scaler`` holds every series' statistics, read from the scaler table (after
        checking its sha256) unless ``scaler`` is False: then a format-4 manifest's ``scaler`` holds only
        the kind, and the rows are read per bucket (``scaler_table.read_scaler``)."""
        path = self.resolve(ref)
        where = path / MANIFEST
        try:
            raw = json.loads(read_regular(where, MAX_MANIFEST_BYTES))
            fmt = int(raw["format_version"])
        except QKANForecastError as exc:  # not a regular file, or too large
            raise QKANForecastError(f"unreadable manifest: {exc}") from None
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise QKANForecastError(f"{where}: unreadable manifest ({excerpt(reason)})") from None
        if fmt > FORMAT_VERSION:
            raise QKANForecastError(
                f"{path}: checkpoint format {fmt} is newer than this qkanforecast {__version__} understands "
                f"(format {FORMAT_VERSION}); upgrade qkanforecast"
            )
        try:
            manifest = Manifest.from_json(raw)
            check_name(manifest.name)
        except QKANForecastError as exc:
            raise QKANForecastError(f"{where}: invalid manifest: {exc}") from None
        if manifest.scaler_file is not None:
            table = path / manifest.scaler_file.file
            _check_sha256(table, manifest.scaler_file.sha256)
            if scaler:
                manifest = replace(manifest, scaler=read_scaler(table))
                try:
                    check_bounds(manifest)
                except QKANForecastError as exc:
                    raise QKANForecastError(f"{table}: invalid scaler table: {exc}") from None
        m = _VERSION.match(path.name)
        version = int(m.group(1)) if m else 0
        return Entry(name=manifest.name, version=version, path=path, manifest=manifest)

    def load_state_dict(self, entry: Entry) -> dict[str, torch.Tensor]:
        """The weights of a version, after checking their sha256 against the manifest."""
        weights = entry.path / WEIGHTS
        if not weights.is_file():
            raise QKANForecastError(f"{entry.path}: {WEIGHTS} is missing")
        _check_sha256(weights, entry.manifest.weights.sha256 if entry.manifest.weights else None)
        try:
            with warnings.catch_warnings():  # e.g. about the pickle protocol of a file we did not write
                warnings.simplefilter("ignore", UserWarning)
                return torch.load(weights, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:  # torch's message advises weights_only=False: never do that here
            raise QKANForecastError(
                f"{weights}: refused to load, it is not a plain state_dict of tensors (it may run code)"
            ) from None

    # -- writing -------------------------------------------------------------------------------------
    def check_writable(self, name: str) -> None:
        """Refuse a registry where ``name`` could not be published, before any training starts."""
        folder = self.root / check_name(name)
        check_writable(folder if os.path.lexists(folder) else self.root, "registry")

    def publish(self, name: str, state_dict: dict[str, torch.Tensor], manifest: Manifest) -> Entry:
        """Write a new version of ``name`` atomically and return it (``manifest.name`` is set to it).

        Both files are written and synced in a hidden staging directory that is then renamed into place,
        so a kill or a full disk leaves no version behind (a killed run's staging directory is removed by
        the next publish or ``remove`` of the name). The weights are serialised in memory first, so a
        failed write is an ``OSError`` with its reason rather than torch's opaque writer error.
        """
        folder = self.root / check_name(name)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self._clean_stale(folder)
            staging = folder / staging_name()
            staging.mkdir(mode=0o700)
        except OSError as exc:
            raise storage_error(folder, exc) from None
        try:
            buffer = io.BytesIO()
            torch.save(state_dict, buffer)
            weights = buffer.getvalue()
            write_synced(staging / WEIGHTS, weights)
            scaler = io.BytesIO()
            write_scaler(scaler, manifest.scaler)
            write_synced(staging / SCALER, scaler.getvalue())
            manifest = replace(
                manifest,
                format_version=FORMAT_VERSION,
                name=name,
                created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                qkanforecast_version=__version__,
                torch_version=torch.__version__,
                weights=Weights(WEIGHTS, hashlib.sha256(weights).hexdigest()),
                scaler_file=ScalerFile(SCALER, hashlib.sha256(scaler.getvalue()).hexdigest(),
                                       len(manifest.scaler.unique_id)),
            )
            on_disk = replace(manifest, scaler=ScalerState(manifest.scaler.kind, [], [], []))
            text = json.dumps(on_disk.to_json(), indent=2, allow_nan=True) + "\n"
            write_synced(staging / MANIFEST, text.encode())
            os.chmod(staging, 0o755)
            while True:  # another process may take a number between our look and our rename: try the next
                version = max(self.versions(name), default=0) + 1
                try:
                    os.rename(staging, folder / f"v{version}")
                    break
                except OSError:
                    if not (folder / f"v{version}").exists():
                        raise
            fsync_dir(folder)
        except BaseException as exc:
            try:
                delete_owned(staging)
            except OSError:
                pass
            if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
                raise storage_error(folder, exc) from None
            raise
        return Entry(name=name, version=version, path=folder / f"v{version}", manifest=manifest)

    def _clean_stale(self, folder: Path) -> list[Path]:
        """Remove the staging directories of killed runs in ``folder``; return them."""
        removed = []
        for path in folder.iterdir():
            if is_stale(path):
                try:
                    check_owned(path)
                    delete_owned(path)
                    removed.append(path)
                except (QKANForecastError, OSError):
                    pass  # not ours to remove, or gone already
        return removed

    def remove(self, ref: str) -> list[Removed]:
        """Delete one version (``NAME@vN``) or, for a bare ``NAME``, every version of it and the staging
        directories killed runs left there.

        Only version directories inside the registry are removed, never through a symbolic link, and only
        when they hold nothing but the files publishing writes; otherwise it is an error and nothing is
        removed. A version whose manifest is broken is removed like any other. Each version is first
        renamed to a hidden name, so readers see it whole or not at all.
        """
        if _is_path(ref):
            raise QKANForecastError(
                f"{ref}: models rm takes a registry reference (NAME or NAME@vN), not a path"
            )
        name, sep, _ = ref.partition("@")
        folder = self.root / check_name(name)
        if folder.is_symlink():
            raise QKANForecastError(
                f"{folder}: is a symbolic link, not a directory the registry wrote; nothing was removed"
            )
        targets = [self.resolve(ref)] if sep else [folder / f"v{v}" for v in self.versions(name)]
        stale = []
        if not sep and folder.is_dir():
            stale = [p for p in folder.iterdir() if is_stale(p)]
        if not targets and not stale:
            self.resolve(name)  # raises the unknown-model error
        root = os.path.realpath(self.root)
        for path in targets + stale:
            check_owned(path)
            if os.path.dirname(os.path.realpath(path)) != os.path.join(root, name):
                raise QKANForecastError(f"{path}: is outside the registry {self.root}; nothing was removed")
            for place in (folder, path):
                if not os.access(place, os.W_OK | os.X_OK):
                    raise QKANForecastError(f"{place}: not writable; nothing was removed")
        removed = []
        for path in targets + stale:
            try:
                hidden = path if path in stale else folder / staging_name()
                if hidden != path:
                    os.rename(path, hidden)
                delete_owned(hidden)
            except OSError as exc:
                raise QKANForecastError(f"{path}: cannot remove it ({exc.strerror or exc})") from None
            label = f"{name}@{path.name}" if path in targets else f"{name} (left over: {path.name})"
            removed.append(Removed(label, path))
        try:
            folder.rmdir()  # only when empty: a concurrent publish may be staging there
        except OSError:
            pass
        return removed


def _is_path(ref: str) -> bool:
    return "/" in ref or os.sep in ref or bool(os.altsep and os.altsep in ref)
