"""Items of the hostile-input audit (issue 10) about files, the registry and messages, each named after its
number there: what may be deleted, read, written and printed, and what is left after a failure or a kill."""

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import sine_panel
from test_registry import MANIFEST, STATE
from typer.testing import CliRunner

from qkanforecast.cli import app
from qkanforecast.errors import QKANForecastError
from qkanforecast.registry import Registry

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--model", "lstm", "--lookback", "16", "--epochs", "1", "--hidden-size", "4"]


def run(*args, **kwargs):
    return CliRunner().invoke(app, [str(a) for a in args], **kwargs)


def one_error(result, status=1):
    """The result is exactly one ``Error:`` line on stderr, nothing on stdout, the given exit status."""
    assert result.exit_code == status, (result.exit_code, result.stderr, result.exception)
    assert result.stdout == "" and result.stderr.startswith("Error: "), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr


def tree(folder):
    """Every path under ``folder``, hidden ones included, relative to it."""
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*"))


@pytest.fixture
def panel(tmp_path):
    path = tmp_path / "panel.csv"
    sine_panel().to_csv(path, index=False)
    return path


@pytest.fixture
def published(tmp_path):
    """A registry with ``m@v1`` and ``m@v2`` (tiny, published directly), and a version directory with
    the same files outside the registry."""
    reg = Registry(tmp_path / "registry")
    reg.publish("m", STATE, MANIFEST)
    reg.publish("m", STATE, MANIFEST)
    outside = tmp_path / "outside"
    shutil.copytree(reg.root / "m" / "v1", outside / "v1")
    (outside / "v1" / "precious.txt").write_text("the user's")
    return reg, outside


# -- 1. models rm deletes only registry versions, only files it wrote ---------------------------------------
def test_item_01_models_rm_removes_only_registry_versions_it_wrote(published, tmp_path):
    reg, outside = published
    before = tree(outside)

    # a path reference is refused, even one whose name has an @ in it
    keep = tmp_path / "keep@v1"
    shutil.copytree(outside / "v1", keep)
    assert "not a path" in one_error(run("models", "rm", keep, "--registry", reg.root))
    assert (keep / "precious.txt").exists()

    # a version that is a symbolic link out of the registry: an error, nothing removed anywhere
    (reg.root / "m" / "v3").symlink_to(outside / "v1")
    assert "is a symbolic link" in one_error(run("models", "rm", "m", "--registry", reg.root))
    assert tree(outside) == before and reg.versions("m") == [1, 2, 3]
    (reg.root / "m" / "v3").unlink()

    # a name that is a symbolic link to a directory outside
    (reg.root / "n").symlink_to(outside)
    assert "is a symbolic link" in one_error(run("models", "rm", "n@v1", "--registry", reg.root))
    assert tree(outside) == before

    # a file the registry did not write, inside a real version: an error, the version kept whole
    (reg.root / "m" / "v2" / "notes.txt").write_text("mine")
    assert "notes.txt, which the registry did not write" in one_error(
        run("models", "rm", "m@v2", "--registry", reg.root))
    kept = ["manifest.json", "model.pt", "notes.txt", "scaler.parquet"]
    assert sorted(os.listdir(reg.root / "m" / "v2")) == kept
    (reg.root / "m" / "v2" / "notes.txt").unlink()

    result = run("models", "rm", "m", "--registry", reg.root)
    assert result.exit_code == 0, result.stderr
    assert not (reg.root / "m").exists() and tree(outside) == before


# -- 3. manifests validated with bounds, read only as bounded regular files; a broken one is listed ---------
def _break(path, mutate):
    manifest = json.loads(path.read_text())
    mutate(manifest)
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "label, damage, reason",
    [
        ("name", lambda p: _break(p, lambda m: m.update(name="../../x")), "invalid model name '../../x'"),
        ("horizon", lambda p: _break(p, lambda m: (m["data"].update(horizon=10**12),
                                                   m["model"].update(horizon=10**12))),
         "manifest.data.horizon: 1000000000000 is outside 0..100,000"),
        # format 4 keeps the statistics in scaler.parquet: its count, or statistics written inline
        ("scaler", lambda p: _break(p, lambda m: m["scaler_file"].update(series=0)),
         "manifest.scaler: 0 series but schema.series says 1"),
        ("scale", lambda p: _break(p, lambda m: m["scaler"].update(unique_id=["x"], loc=[0.0], scale=[0.0])),
         "scales finite and positive"),
        ("missing", lambda p: _break(p, lambda m: m.pop("scaler")), "manifest: missing key 'scaler'"),
        ("type", lambda p: _break(p, lambda m: m["data"].update(lookback="16")),
         "manifest.data.lookback: expected int, got '16'"),
        ("calibration", lambda p: _break(p, lambda m: m.update(calibration={
            "method": "x", "windows": 1, "levels": [90], "half_widths": [[1.0, 1.0]]})),
         "each row needs 1 finite values"),
        ("dev-zero", lambda p: (p.unlink(), p.symlink_to("/dev/zero")), "is a symbolic link"),
        ("large", lambda p: p.write_text(" " * 6000 + p.read_text()), "bytes, more than the 5,000 allowed"),
    ],
)
def test_item_03_a_broken_manifest_is_refused_listed_as_invalid_and_removable(
        published, monkeypatch, label, damage, reason):
    reg, _ = published
    monkeypatch.setattr("qkanforecast.registry.MAX_MANIFEST_BYTES", 5000, raising=False)
    damage(reg.root / "m" / "v2" / "manifest.json")
    with pytest.raises(QKANForecastError) as info:
        reg.get("m@v2")
    assert reason in str(info.value)

    listed = run("models", "list", "--registry", reg.root, "--json")
    assert listed.exit_code == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [r["ref"] for r in rows] == ["m@v1", "m@v2"]
    assert rows[0]["model"] == "lstm" and rows[0]["invalid"] is None
    assert reason in rows[1]["invalid"] and rows[1]["model"] is None
    assert "note: m@v2 is invalid; `qkanforecast models rm m@v2` removes it" in listed.stderr

    removed = run("models", "rm", "m@v2", "--registry", reg.root)
    assert removed.exit_code == 0, removed.stderr
    assert reg.versions("m") == [1] and reg.get("m@v1").manifest.model.model == "lstm"


# -- 4. control characters escaped, quoted input cut short --------------------------------------------------
def test_item_04_messages_escape_control_characters_and_quote_short_excerpts(tmp_path):
    hostile = tmp_path / "hostile.csv"
    hostile.write_text("ds,\x1b]0;owned\x07\x1b[31mred\n2024-01-01,1\n")
    message = one_error(run("ingest", hostile))
    assert not any(ord(c) < 32 for c in message[:-1]) and "\x1b" not in message
    assert "\\x1b]0;owned\\x07\\x1b[31mred" in message

    gappy = tmp_path / "gappy.csv"  # the ingest report names the series it filled
    gappy.write_text("unique_id,ds,y\n\x1b[31mred,2024-01-01 00:00,1\n\x1b[31mred,2024-01-01 00:20,2\n"
                     "\x1b[31mred,2024-01-01 00:30,3\n")
    result = run("ingest", gappy, "--fill", "linear", "--freq", "10min", "-o", tmp_path / "out.csv")
    assert result.exit_code == 0, result.stderr
    assert "\\x1b[31mred: 1 missing timestamps" in result.stderr and "\x1b" not in result.stderr

    binary = tmp_path / "binary.csv"
    noise = bytes(b for b in range(256) if b not in b"\r\n,;\t")
    binary.write_bytes(noise * 40 + b"\n1,2\n")  # 10 KB of every other byte before the first newline
    message = one_error(run("ingest", binary))
    assert len(message) < 700 and not any(ord(c) < 32 for c in message[:-1]), message
    assert "characters cut" in message or "more characters" in message


# -- 5. -o keeps the replaced file's mode and writes through a symbolic link --------------------------------
def test_item_05_output_keeps_the_mode_and_writes_through_a_link(panel, tmp_path):
    private = tmp_path / "private.csv"
    private.write_text("old")
    private.chmod(0o600)
    result = run("ingest", panel, "-o", private)
    assert result.exit_code == 0, result.stderr
    assert stat.S_IMODE(private.stat().st_mode) == 0o600 and private.read_text().startswith("unique_id,ds,y")

    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "data.csv"
    target.write_text("old")
    target.chmod(0o640)
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    result = run("ingest", panel, "-o", link)
    assert result.exit_code == 0, result.stderr
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text().startswith("unique_id,ds,y") and stat.S_IMODE(target.stat().st_mode) == 0o640
    assert tree(tmp_path / "real") == ["data.csv"]  # no temporary file left next to the target


# -- 15. read-only registry and -o locations are found out before the work ----------------------------------
def _permission_bits_apply(monkeypatch):
    """Root ignores permission bits, so when the tests run as root, ``os.access`` is made to answer as
    for the directory's owner without root's override: no write bit, no writing."""
    if os.geteuid() != 0:
        return
    real = os.access

    def access(path, mode, **kwargs):
        if mode & os.W_OK and not os.stat(path).st_mode & stat.S_IWUSR:
            return False
        return real(path, mode, **kwargs)

    monkeypatch.setattr(os, "access", access)


def test_item_15_read_only_locations_are_an_error_before_the_work(panel, tmp_path, monkeypatch):
    reg = tmp_path / "registry"
    assert run("train", panel, *FAST, "--registry", reg, "--name", "m", "-q").exit_code == 0
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    (reg / "m").chmod(0o555)  # its version directory stays writable: removing its files would break it
    _permission_bits_apply(monkeypatch)
    try:
        trained = run("train", panel, *FAST, "--registry", ro / "reg")  # not -q: no epoch may start
        assert one_error(trained) == f"Error: {ro / 'reg'}: the registry is not writable ({ro} does not " \
                                     "allow creating it)\n"
        fc = run("forecast", panel, "-m", "m@v1", "--registry", reg, "-o", ro / "f.csv")
        assert one_error(fc) == f"Error: {ro / 'f.csv'}: directory {ro} is not writable\n"
        rm = run("models", "rm", "m@v1", "--registry", reg)
        assert one_error(rm) == f"Error: {reg / 'm'}: not writable; nothing was removed\n"
        assert sorted(os.listdir(reg / "m" / "v1")) == ["manifest.json", "model.pt", "scaler.parquet"]
    finally:
        ro.chmod(0o755)
        (reg / "m").chmod(0o755)


# -- 16. a full disk: one error, nothing half-written -------------------------------------------------------
class _FullDisk:
    """A file on a disk that fills up after ``room`` bytes."""

    def __init__(self, real, room=64):
        self.real, self.room = real, room

    def write(self, data):
        if len(data) > self.room:
            self.real.write(bytes(data[: self.room]))
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.real.write(data)

    def __getattr__(self, name):
        return getattr(self.real, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.real.close()


def test_item_16_a_full_disk_is_an_error_and_leaves_nothing(panel, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "kept.parquet").write_bytes(b"yesterday's")
    real_fdopen, real_open = os.fdopen, open
    monkeypatch.setattr("qkanforecast.data.writers.os.fdopen",
                        lambda *a, **k: _FullDisk(real_fdopen(*a, **k)))
    for target in ("kept.parquet", "new.csv"):
        message = one_error(run("ingest", panel, "-o", out / target))
        full = "cannot write (No space left on device); nothing was written"
        assert message == f"Error: {out / target}: {full}\n"
    assert tree(out) == ["kept.parquet"] and (out / "kept.parquet").read_bytes() == b"yesterday's"
    monkeypatch.undo()

    from qkanforecast import files

    monkeypatch.setattr(files, "open", lambda *a, **k: _FullDisk(real_open(*a, **k)), raising=False)
    reg = tmp_path / "registry"
    message = one_error(run("train", panel, *FAST, "--registry", reg, "--name", "m", "-q"))
    assert message == f"Error: {reg / 'm'}: cannot write (No space left on device); nothing was written\n"
    assert tree(reg) == ["m"]  # no version, no staging directory


# -- 22. --name defaults to the data file's stem ------------------------------------------------------------
def test_item_22_the_default_name_is_the_data_files_stem(tmp_path):
    reg = tmp_path / "registry"
    for file_name, expected in (("traffic.csv", "traffic@v1"), ("my cells (1).csv", "my-cells-1@v1")):
        sine_panel().to_csv(tmp_path / file_name, index=False)
        result = run("train", tmp_path / file_name, *FAST, "--registry", reg, "-q")
        assert result.exit_code == 0 and result.stdout == f"{expected}\n", result.stderr
    result = run("train", "-", *FAST, "--registry", reg, "-q", input=sine_panel().to_csv(index=False))
    assert result.exit_code == 0 and result.stdout == "lstm@v1\n", result.stderr  # stdin: the family


# -- 24. -o onto a directory --------------------------------------------------------------------------------
def test_item_24_output_onto_a_directory_is_an_error(panel, tmp_path):
    (tmp_path / "d.csv").mkdir()
    message = one_error(run("ingest", panel, "-o", tmp_path / "d.csv"))
    assert message == f"Error: {tmp_path / 'd.csv'}: is a directory; give a file name inside it\n"
    (tmp_path / "outdir").mkdir()
    message = one_error(run("ingest", panel, "-o", f"{tmp_path / 'outdir'}/"))
    assert message.startswith(f"Error: {tmp_path / 'outdir'}/: is a directory name; give a file name")
    assert tree(tmp_path / "d.csv") == [] and tree(tmp_path / "outdir") == []


# -- 27. left-over staging directories are cleaned; SIGTERM removes temporary files ------------------------
def test_item_27_stale_staging_directories_are_removed_with_the_name(published):
    reg, _ = published
    folder = reg.root / "m"
    old = folder / ".staging-k2j4l5m6"  # the old naming, two hours old
    dead = folder / f".staging-{2**22 + 12345}@{os.uname().nodename}-0a1b2c3d"  # a process that is gone
    for stale in (old, dead):
        stale.mkdir()
        (stale / "model.pt").write_bytes(b"half")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    result = run("models", "rm", "m", "--registry", reg.root)
    assert result.exit_code == 0, result.stderr
    assert not folder.exists()


_TERM_DURING_WRITE = """
import os, signal, sys, time
import qkanforecast.data.writers as writers
real = writers._write
def write(table, fh, fmt):
    fh.write(b"unique_id,ds,y\\n")
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)
writers._write = write
from qkanforecast.cli import app
sys.argv = ["qkanforecast", "ingest", sys.argv[1], "-o", sys.argv[2]]
app()
"""


def test_item_27_sigterm_is_handled_like_ctrl_c(panel, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run([sys.executable, "-c", _TERM_DURING_WRITE, str(panel), str(out / "x.csv")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 143 and proc.stderr == "Error: terminated; nothing was written\n"
    assert tree(out) == []


# -- 28. the README's cron script runs under cron's PATH -----------------------------------------------------
@pytest.mark.slow
def test_item_28_readme_cron_script_runs_under_crons_path(tmp_path):
    """The nightly script and job file of the README, with /srv/fc moved to a temporary directory, run the
    way cron runs them: a bare environment with PATH=/usr/bin:/bin."""
    pytest.importorskip("matplotlib")  # the script draws the forecast too
    readme = (ROOT / "README.md").read_text()
    cron = readme.split("## Cron and pipelines", 1)[1]
    job = cron.split("`/srv/fc/nightly.toml`:", 1)[1].split("```", 2)[1]
    script = cron.split("`/srv/fc/nightly.sh`:", 1)[1].split("```", 2)[1]
    for name, text in (("nightly.toml", job), ("nightly.sh", script)):
        (tmp_path / name).write_text(text.lstrip().replace("/srv/fc", str(tmp_path)))
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)
    sine_panel().to_parquet(tmp_path / "last28d.parquet")
    first = run("train", tmp_path / "last28d.parquet", *FAST, "--name", "cells", "--registry",
                tmp_path / "registry", "-q")
    assert first.exit_code == 0 and first.stdout == "cells@v1\n", first.stderr
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    done = subprocess.run(["/bin/sh", tmp_path / "nightly.sh"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "tomorrow.parquet").exists() and (tmp_path / "tomorrow.png").exists()
    assert "thread count" in readme.split("## Quick start", 1)[1].split("## Commands", 1)[0]


# -- 29. the sMAPE scale is named ----------------------------------------------------------------------------
def test_item_29_the_smape_scale_is_named_in_the_table_header(panel, tmp_path):
    reg = tmp_path / "registry"
    assert run("train", panel, *FAST, "--horizon", "2", "--registry", reg, "--name", "m", "-q").exit_code == 0
    result = run("evaluate", panel, "-m", "m@v1", "--registry", reg, "--windows", "2", "-q")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[0].split()[5] == "smape(0-200)"
    as_json = run("evaluate", panel, "-m", "m@v1", "--registry", reg, "--windows", "2", "--json", "-q")
    assert "smape" in json.loads(as_json.stdout.splitlines()[0])
    assert "sMAPE (0-200)" in (ROOT / "README.md").read_text()

