"""``train`` under torchrun: two ranks over gloo on CPU against the single-process run.

Each test starts ``python -m torch.distributed.run --standalone`` as a subprocess with a timeout, on a
tiny panel of 4 series (each rank fits 2), one thread per rank.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import sine_panel

from qkanforecast.config import Settings
from qkanforecast.registry import Registry

pytestmark = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="torch.distributed with gloo is not available",
)

TINY = ["--lookback", "16", "--hidden-size", "4", "--epochs", "2", "--reps", "1", "--horizon", "3"]
# Two ranks average their gradients, so an epoch takes half the steps of one process with twice the
# windows per step: the validation loss after 2 epochs differs from the single-process one. Measured on
# this panel: lstm 0.0762 vs 0.0604, qkan-lstm ensemble 0.0858 vs 0.0781.
REL_TOLERANCE = 0.35
TIMEOUT_S = 180


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", QKANFORECAST_HOME=str(tmp_path / "home"),
               QKANFORECAST_DDP_DIGESTS=str(tmp_path))
    return env


def _train(tmp_path: Path, args: list[str], ranks: int | None) -> subprocess.CompletedProcess[str]:
    """``qkanforecast train`` on the panel: under torchrun with ``ranks`` processes, or plain (None)."""
    launcher = [] if ranks is None else ["-m", "torch.distributed.run", "--standalone",
                                         "--nproc-per-node", str(ranks)]
    cmd = [sys.executable, *launcher, "-m", "qkanforecast", "train", str(tmp_path / "panel.csv"), *args]
    return subprocess.run(cmd, env=_env(tmp_path), capture_output=True, text=True, timeout=TIMEOUT_S,
                          check=False)


@pytest.fixture
def panel(tmp_path: Path) -> Path:
    sine_panel(n_series=4, steps=400).to_csv(tmp_path / "panel.csv", index=False)
    return tmp_path


@pytest.mark.slow
@pytest.mark.parametrize("model", [["--model", "lstm"], ["--model", "qkan-lstm", "--ensemble", "1,2"]],
                         ids=["lstm", "qkan-lstm-ensemble"])
def test_two_ranks_publish_once_with_equal_weights(panel: Path, model: list[str]) -> None:
    ddp = _train(panel, [*TINY, *model, "--name", "ddp", "-q"], ranks=2)
    assert ddp.returncode == 0, ddp.stderr
    assert ddp.stdout.split() == ["ddp@v1"]  # only rank 0 prints the reference
    reg = Registry(panel / "home")
    assert sorted(p.name for p in (panel / "home" / "ddp").iterdir() if p.name.startswith("v")) == ["v1"]
    digests = sorted(panel.glob("rank*.sha256"))
    assert [p.name for p in digests] == ["rank0.sha256", "rank1.sha256"]
    assert digests[0].read_text() == digests[1].read_text()  # bitwise-equal weights on both ranks

    single = _train(panel, [*TINY, *model, "--name", "one", "-q"], ranks=None)
    assert single.returncode == 0, single.stderr
    got, want = reg.get("ddp@v1").manifest, reg.get("one@v1").manifest
    ids = sorted(sine_panel(n_series=4, steps=400)["unique_id"].unique())
    assert sorted(got.scaler.unique_id) == ids  # every rank's scalers, gathered into the one manifest
    for uid in ids:  # each fitted on its own rank, equal to the single process' fit
        i, j = got.scaler.unique_id.index(uid), want.scaler.unique_id.index(uid)
        assert (got.scaler.loc[i], got.scaler.scale[i]) == (want.scaler.loc[j], want.scaler.scale[j])
    assert got.schema.series == 4
    assert (got.training.train_windows, got.training.val_windows) == (
        want.training.train_windows, want.training.val_windows)
    assert got.calibration is not None and want.calibration is not None
    assert got.calibration.windows == want.calibration.windows  # residuals of both ranks
    assert got.schema.trained_until == want.schema.trained_until
    assert abs(got.training.val_loss - want.training.val_loss) <= REL_TOLERANCE * want.training.val_loss


@pytest.mark.slow
def test_one_rank_under_torchrun_is_the_single_process_run(panel: Path) -> None:
    one = _train(panel, [*TINY, "--model", "lstm", "--name", "a", "-q"], ranks=1)
    plain = _train(panel, [*TINY, "--model", "lstm", "--name", "b", "-q"], ranks=None)
    assert one.returncode == 0 and plain.returncode == 0, one.stderr + plain.stderr
    reg = Registry(panel / "home")
    a, b = reg.load_state_dict(reg.get("a@v1")), reg.load_state_dict(reg.get("b@v1"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    ma = json.loads((panel / "home" / "a" / "v1" / "manifest.json").read_text())["history"]
    mb = json.loads((panel / "home" / "b" / "v1" / "manifest.json").read_text())["history"]
    assert [e["val_loss"] for e in ma] == [e["val_loss"] for e in mb]


@pytest.mark.slow
def test_more_ranks_than_series_is_one_error_line(tmp_path: Path) -> None:
    pd.DataFrame(sine_panel(n_series=1, steps=400)).to_csv(tmp_path / "panel.csv", index=False)
    run = _train(tmp_path, [*TINY, "--model", "lstm", "-q"], ranks=2)
    assert run.returncode != 0
    assert "Error: 1 series cannot be shared among 2 ranks" in run.stderr
    assert not (tmp_path / "home" / "panel").exists()


STEP = {"model": "lstm", "lookback": 16, "horizon": 3, "hidden_size": 4, "epochs": 1, "batch_size": 100_000,
        "ensemble": []}


def _one_step_rank(rank: int, store: str, out: str) -> None:
    """Rank ``rank`` of 2: one full-batch DDP step (``fit_table``) on its two series; rank 0 saves."""
    from qkanforecast.data import from_frame
    from qkanforecast.distributed import Dist
    from qkanforecast.train import fit_table, resolve

    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        dist = Dist(rank, 2)
        table = from_frame(sine_panel(n_series=4, steps=400))
        settings = resolve(Settings().updated(STEP), table)
        fitted = fit_table(dist.shard(table), settings, dist=dist)
        if rank == 0:
            torch.save(fitted.model.state_dict(), out)
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_one_ddp_step_on_two_shards_is_one_step_on_both(tmp_path: Path) -> None:
    """Equal-length series give each rank the same number of windows, so the mean of the ranks' mean
    gradients is the gradient over all windows: one full-batch step matches the single process."""
    import torch.multiprocessing as mp

    from qkanforecast.data import from_frame
    from qkanforecast.train import fit_table

    out = tmp_path / "ddp.pt"
    mp.start_processes(_one_step_rank, args=(str(tmp_path / "store"), str(out)), nprocs=2, join=True,
                       start_method="spawn")
    ddp = torch.load(out)
    single = fit_table(from_frame(sine_panel(n_series=4, steps=400)), Settings().updated(STEP)).model
    want = single.state_dict()
    assert ddp.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(ddp[key], want[key], atol=1e-6, rtol=0)
    assert not all(torch.equal(ddp[k], single_init) for k, single_init in _initial().items())


def _initial() -> dict[str, torch.Tensor]:
    """The weights before the step (to show that the step moved them)."""
    from qkanforecast.data import from_frame
    from qkanforecast.models import build_model
    from qkanforecast.train import resolve

    settings = resolve(Settings().updated(STEP), from_frame(sine_panel(n_series=4, steps=400)))
    torch.manual_seed(settings.train.seed)
    return build_model(settings.model).state_dict()


def _buckets(panel: Path, buckets: int) -> Path:
    from qkanforecast.data import read_source, write_partitioned

    write_partitioned(read_source(str(panel / "panel.csv")), panel / "parts", buckets)
    return panel / "parts"


def test_each_rank_reads_its_own_buckets_only(panel: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from qkanforecast.data.partitioned import Dataset
    from qkanforecast.distributed import Dist
    from qkanforecast.errors import QKANForecastError

    data = Dataset.open(_buckets(panel, 4))
    read: list[int] = []
    original = Dataset.read_part
    monkeypatch.setattr(Dataset, "read_part",
                        lambda self, part: read.append(part.bucket) or original(self, part))
    dist, table = Dist(1, 2).read_buckets(data)
    mine = data.parts[1::2]
    assert read == [p.bucket for p in mine] and len(mine) < len(data.parts)
    assert sorted(table.ids) == sorted(u for p in mine for u in original(data, p).ids)
    assert dist.own_buckets and dist.shard(table) is table
    with pytest.raises(QKANForecastError, match=f"{len(data.parts)} buckets cannot be shared among 5 ranks"):
        Dist(0, 5).read_buckets(data)


@pytest.mark.slow
def test_two_ranks_on_a_partitioned_table(panel: Path) -> None:
    """Each rank trains on its buckets; the one version has every series' scalers (equal to the
    single-process fit), the series and window counts of the whole table, and equal weights on both."""
    from qkanforecast.data.partitioned import Dataset

    parts = _buckets(panel, 4)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "qkanforecast", "train", str(parts), *TINY, "--model", "lstm", "--name", "ddp", "-q"]
    ddp = subprocess.run(cmd, env=_env(panel), capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert ddp.returncode == 0, ddp.stderr
    single = _train(panel, [*TINY, "--model", "lstm", "--name", "one", "-q"], ranks=None)
    assert single.returncode == 0, single.stderr
    reg = Registry(panel / "home")
    got, want = reg.get("ddp@v1").manifest, reg.get("one@v1").manifest
    assert sorted(got.scaler.unique_id) == sorted(want.scaler.unique_id)
    for uid in want.scaler.unique_id:
        i, j = got.scaler.unique_id.index(uid), want.scaler.unique_id.index(uid)
        assert (got.scaler.loc[i], got.scaler.scale[i]) == (want.scaler.loc[j], want.scaler.scale[j])
    assert got.schema.series == 4
    assert (got.training.train_windows, got.training.val_windows) == (
        want.training.train_windows, want.training.val_windows)
    digests = sorted(panel.glob("rank*.sha256"))
    assert len(digests) == 2 and digests[0].read_text() == digests[1].read_text()
    data = Dataset.open(parts)
    for rank in (0, 1):  # the series of its own buckets (not series i % 2 == rank of the whole table)
        trained = (panel / f"rank{rank}.series").read_text().split()
        assert trained == sorted(u for p in data.parts[rank::2] for u in data.read_part(p).ids)


@pytest.mark.slow
def test_two_ranks_with_covariates_share_one_scaling(tmp_path: Path) -> None:
    """Historical, future and static covariates under torchrun: every rank scales them by the statistics
    of all ranks' training rows, which equal the single process' (to rounding), and the ranks end with
    equal weights."""
    frame = sine_panel(n_series=4, steps=400)
    rng = np.random.default_rng(3)
    codes = frame["unique_id"].astype("category").cat.codes.to_numpy()
    frame["temp"] = rng.normal(10 * codes, 1.0 + codes)  # a different level and spread per series
    frame["promo"] = (rng.random(len(frame)) < 0.2).astype(float)
    frame["region"] = 3.0 * codes
    frame.to_csv(tmp_path / "panel.csv", index=False)
    exog = ["--hist-exog", "temp", "--futr-exog", "promo", "--static", "region"]
    ddp = _train(tmp_path, [*TINY, "--model", "lstm", *exog, "--name", "ddp", "-q"], ranks=2)
    assert ddp.returncode == 0, ddp.stderr
    single = _train(tmp_path, [*TINY, "--model", "lstm", *exog, "--name", "one", "-q"], ranks=None)
    assert single.returncode == 0, single.stderr
    reg = Registry(tmp_path / "home")
    got, want = reg.get("ddp@v1").manifest.covariates, reg.get("one@v1").manifest.covariates
    assert got is not None and want is not None and got.columns == want.columns == ["temp", "promo", "region"]
    np.testing.assert_allclose(got.loc, want.loc, rtol=1e-12)
    np.testing.assert_allclose(got.scale, want.scale, rtol=1e-12)
    digests = sorted(tmp_path.glob("rank*.sha256"))
    assert len(digests) == 2 and digests[0].read_text() == digests[1].read_text()
