"""The checkpoint registry: ``<root>/<name>/v<N>/`` holding ``model.pt`` and ``manifest.json``.

``model.pt`` is a plain state_dict (loaded with ``torch.load(weights_only=True)``); everything needed to
rebuild the model, scale the data and check the input lives in ``manifest.json``. Publishing writes a
hidden staging directory and renames it into place, so a killed run leaves no half-written version and
two runs publishing the same name at once get different version numbers.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import pickle
import re
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from qkanforecast import __version__
from qkanforecast.errors import QKANForecastError
from qkanforecast.manifest import FORMAT_VERSION, Manifest, Weights

MANIFEST = "manifest.json"
WEIGHTS = "model.pt"
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

    def entries(self) -> list[Entry]:
        return [self.get(f"{name}@v{v}") for name in self.names() for v in self.versions(name)]

    def resolve(self, ref: str) -> Path:
        """Turn ``NAME``, ``NAME@latest``, ``NAME@vN`` or a version directory path into a directory."""
        if os.sep in ref or "/" in ref or (os.altsep and os.altsep in ref):  # a bare name is never a path
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

    def get(self, ref: str) -> Entry:
        """Resolve a reference and read its manifest, checking the format version."""
        path = self.resolve(ref)
        try:
            raw = json.loads((path / MANIFEST).read_text())
            fmt = int(raw["format_version"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise QKANForecastError(f"{path / MANIFEST}: unreadable manifest ({exc})") from None
        if fmt > FORMAT_VERSION:
            raise QKANForecastError(
                f"{path}: checkpoint format {fmt} is newer than this qkanforecast {__version__} understands "
                f"(format {FORMAT_VERSION}); upgrade qkanforecast"
            )
        try:
            manifest = Manifest.from_json(raw)
        except QKANForecastError as exc:
            raise QKANForecastError(f"{path / MANIFEST}: invalid manifest: {exc}") from None
        m = _VERSION.match(path.name)
        version = int(m.group(1)) if m else 0
        return Entry(name=manifest.name, version=version, path=path, manifest=manifest)

    def load_state_dict(self, entry: Entry) -> dict[str, torch.Tensor]:
        """The weights of a version, after checking their sha256 against the manifest."""
        weights = entry.path / WEIGHTS
        if not weights.is_file():
            raise QKANForecastError(f"{entry.path}: {WEIGHTS} is missing")
        expected = entry.manifest.weights.sha256 if entry.manifest.weights else None
        actual = sha256_file(weights)
        if actual != expected:
            raise QKANForecastError(
                f"{weights}: sha256 {actual[:12]}… does not match the manifest ({str(expected)[:12]}…); "
                "the checkpoint is corrupt or was modified"
            )
        try:
            with warnings.catch_warnings():  # e.g. about the pickle protocol of a file we did not write
                warnings.simplefilter("ignore", UserWarning)
                return torch.load(weights, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:  # torch's message advises weights_only=False: never do that here
            raise QKANForecastError(
                f"{weights}: refused to load, it is not a plain state_dict of tensors (it may run code)"
            ) from None

    # -- writing -------------------------------------------------------------------------------------
    def publish(self, name: str, state_dict: dict[str, torch.Tensor], manifest: Manifest) -> Entry:
        """Write a new version of ``name`` atomically and return it (``manifest.name`` is set to it)."""
        folder = self.root / check_name(name)
        folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder))
        try:
            torch.save(state_dict, staging / WEIGHTS)
            manifest = replace(
                manifest,
                format_version=FORMAT_VERSION,
                name=name,
                created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                qkanforecast_version=__version__,
                torch_version=torch.__version__,
                weights=Weights(WEIGHTS, sha256_file(staging / WEIGHTS)),
            )
            (staging / MANIFEST).write_text(json.dumps(manifest.to_json(), indent=2, allow_nan=True) + "\n")
            os.chmod(staging, 0o755)
            while True:  # another process may take a number between our look and our rename: try the next
                version = max(self.versions(name), default=0) + 1
                try:
                    os.rename(staging, folder / f"v{version}")
                    break
                except OSError:
                    if not (folder / f"v{version}").exists():
                        raise
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return Entry(name=name, version=version, path=folder / f"v{version}", manifest=manifest)

    def remove(self, ref: str) -> list[Entry]:
        """Delete one version (``NAME@vN``) or, for a bare ``NAME``, every version of it."""
        name, sep, _ = ref.partition("@")
        if sep:
            targets = [self.get(ref)]
        else:
            targets = [self.get(f"{name}@v{v}") for v in self.versions(check_name(name))]
            if not targets:
                self.resolve(name)  # raises the unknown-model error
        for entry in targets:
            shutil.rmtree(entry.path)
        try:
            (self.root / name).rmdir()  # only when empty: a concurrent publish may be staging there
        except OSError:
            pass
        return targets
