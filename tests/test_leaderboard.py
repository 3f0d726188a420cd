"""bench/leaderboard.py's pure parts on tiny data: the protocol's origins, the scoring, the cache keys."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qkanforecast.data import from_frame


@pytest.fixture(scope="module")
def lb():
    from bench import leaderboard

    return leaderboard


@pytest.fixture
def table():
    """Two hourly series of 4 days: a noisy daily sine at two levels."""
    t, rng = np.arange(96), np.random.default_rng(0)
    frames = [
        pd.DataFrame({"unique_id": uid, "ds": pd.date_range("2024-01-01", periods=96, freq="h"),
                      "y": level + 10 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 1, 96)})
        for uid, level in (("a", 50.0), ("b", 500.0))
    ]  # fmt: skip
    return from_frame(pd.concat(frames, ignore_index=True))


def test_protocol_holds_out_the_tail_and_rolls_origins_inside_it(lb, table):
    task = lb.Task("t", horizon=3, windows=4, step=2)
    assert task.test_size == 9
    stamps = table.frame["ds"].to_numpy()[:96]
    cuts = lb.origins(stamps, task)
    assert list(cuts) == list(stamps[[86, 88, 90, 92]])  # first origin: the last training step
    keys = lb.expected_keys(table, task)
    assert len(keys) == 2 * 4 * 3
    last = keys[keys["cutoff"] == cuts[-1]]
    assert last["ds"].max() == stamps[-1]  # the last window ends with the data
    assert (keys["ds"] > keys["cutoff"]).all()
    assert (lb.day_ahead(24).horizon, lb.day_ahead(24).test_size) == (24, 168)
    hour = lb.hour_ahead(144)
    assert (hour.horizon, hour.windows, hour.step, hour.test_size) == (6, 168, 6, 1008)


def test_score_aggregates_like_evaluate_and_rejects_other_origins(lb, table):
    task = lb.Task("t", horizon=3, windows=4, step=2)
    keys = lb.expected_keys(table, task)
    y = table.frame.set_index(["unique_id", "ds"])["y"]
    bt = keys.assign(y=[y[(u, d)] for u, d in zip(keys["unique_id"], keys["ds"], strict=True)])
    bt["m"] = bt["y"] + np.where(bt["unique_id"] == "a", 1.0, 2.0)
    got = lb.score(bt.sample(frac=1, random_state=0), "m", table, task)  # row order does not matter

    def scale(uid):  # seasonal naive (a day) on the data up to and including the first origin
        v = y[uid].to_numpy()[:87]
        return np.mean(np.abs(v[24:] - v[:-24]))

    assert got["mae"] == pytest.approx(1.5)
    assert got["mase"] == pytest.approx((1 / scale("a") + 2 / scale("b")) / 2)
    smape = np.mean(200 * np.abs(bt["m"] - bt["y"]) / (np.abs(bt["m"]) + np.abs(bt["y"])))
    assert got["smape"] == pytest.approx(smape)
    with pytest.raises(ValueError, match="origins"):
        lb.score(bt.iloc[1:], "m", table, task)
    with pytest.raises(ValueError, match="origins"):
        lb.score(bt.assign(cutoff=bt["cutoff"] - pd.Timedelta("1h")), "m", table, task)


def test_cache_keys_follow_source_train_args_and_peer_settings(lb, tmp_path):
    pkg = tmp_path / "qkanforecast"
    pkg.mkdir()
    (pkg / "x.py").write_text("a = 1\n")
    before = lb.source_hash(tmp_path)
    (pkg / "x.py").write_text("a = 2\n")
    assert lb.source_hash(tmp_path) != before

    env = lb.Env(Path("py"), Path("peers-py"), tmp_path, max_steps=10, jobs=1, src="s1", peers="p1")
    data = lb.DATASETS["milan-cells"]
    job = lb.Job(data, data.tasks[0], "qkan-lstm")
    ablation = lb.Job(data, data.tasks[0], "qkan-lstm", "lb2d", ("--lookback", "48"))
    assert env.key(job, "qkan-lstm") != env.key(ablation, "qkan-lstm")
    assert env.key(job, "naive") == env.key(ablation, "naive")  # baselines ignore our train args
    assert env.key(job, "nf-nhits") == env.key(ablation, "nf-nhits")
    keys = {env.key(job, c)[0] for c in (*lb.OURS, *lb.BASELINES, *lb.PEERS)}
    assert len(keys) == len(lb.OURS) + len(lb.BASELINES) + len(lb.PEERS)  # one key per contender
    longer = lb.Env(Path("py"), Path("peers-py"), tmp_path, max_steps=20, jobs=1, src="s2", peers="p1")
    assert longer.key(job, "nf-nhits") != env.key(job, "nf-nhits")  # peer settings are in the key
    assert longer.key(job, "autoets") == env.key(job, "autoets")  # ... and our source is not
    assert longer.key(job, "qkan-lstm") != env.key(job, "qkan-lstm")


def test_a_rerun_plans_only_what_the_cache_lacks(lb, tmp_path):
    env = lb.Env(Path("py"), Path("peers-py"), tmp_path, max_steps=10, jobs=1, src="s1", peers="p1")
    args = lb.parse_args(["--datasets", "milan-cells"])
    first = lb.plan(args, lb.load_runs(tmp_path / "none.csv"), env)
    assert sorted(j.contender for j in first) == sorted([*lb.OURS, *lb.PEERS])  # ours bring the baselines
    runs_path = tmp_path / "runs.csv"
    for job in first:
        names = [job.contender, *lb.BASELINES] if job.contender in lb.OURS else [job.contender]
        rows = [{"contender": c, "mae": 1.0, "smape": 1.0, "mase": 1.0, "parameters": 1} for c in names]
        lb.record(rows, job, env, runs_path)
    runs = lb.load_runs(runs_path)
    assert lb.plan(args, runs, env) == []
    assert len(lb.current(runs, env)) == len(lb.OURS) + len(lb.PEERS) + len(lb.BASELINES)
    env.src = "s2"  # the package changed: ours and the baselines are stale, the peers are not
    assert sorted(j.contender for j in lb.plan(args, runs, env)) == sorted(lb.OURS)
    assert set(lb.current(runs, env)["contender"]) == set(lb.PEERS)
    only = lb.plan(lb.parse_args(["--datasets", "milan-cells", "--only", "baselines"]), runs, env)
    assert [j.contender for j in only] == ["baselines"]  # a throwaway model, for evaluate's baselines
