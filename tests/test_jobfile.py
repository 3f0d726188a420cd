"""--config job.toml: every command reads its options from its table; the command line wins; unknown keys,
wrong types, bad files are one Error line naming the key and the file."""

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from qkanforecast.cli import app
from qkanforecast.registry import Registry

TRAIN = """
[train]
model = "lstm"
name = "lstm"
horizon = 2
lookback = 16
hidden-size = 4
epochs = 1
batch_size = 64
lags = false
registry = "{registry}"
quiet = true

[forecast]
level = [80, 95]
registry = "{registry}"
"""


def run(*args, **kwargs):
    return CliRunner().invoke(app, [str(a) for a in args], **kwargs)


def job(tmp_path, text, name="job.toml"):
    path = tmp_path / name
    path.write_text(text.format(registry=tmp_path / "registry"))
    return path


def test_every_command_takes_a_job_file():
    def commands(group, above):
        for name, cmd in group.commands.items():
            if hasattr(cmd, "commands"):
                yield from commands(cmd, [*above, name])
            else:
                yield " ".join([*above, name]), cmd

    found = dict(commands(get_command(app), []))
    assert {
        "train",
        "forecast",
        "evaluate",
        "ingest",
        "models list",
        "plot forecast",
        "plot activations",
    } <= set(found)
    for name, cmd in found.items():
        assert any("--config" in p.opts for p in cmd.params), name


def test_options_come_from_the_file_and_the_command_line_wins(panel_csv, tmp_path):
    path = job(tmp_path, TRAIN)
    first = run("train", panel_csv, "--config", path)
    assert first.exit_code == 0, first.stderr
    assert first.stdout == "lstm@v1\n" and first.stderr == ""  # quiet = true
    second = run("train", panel_csv, "--config", path, "--horizon", "3", "--lags")
    assert second.exit_code == 0, second.stderr
    registry = Registry(tmp_path / "registry")
    one, two = registry.get("lstm@v1").manifest, registry.get("lstm@v2").manifest
    assert (one.data.horizon, one.data.lookback, one.model.hidden_size, one.train.epochs) == (2, 16, 4, 1)
    assert one.train.batch_size == 64 and one.model.lags is False
    assert (two.data.horizon, two.data.lookback, two.model.lags) == (3, 16, True)
    fc = run("forecast", panel_csv, "-m", "lstm@v1", "--config", path)
    assert fc.exit_code == 0, fc.stderr
    assert fc.stdout.splitlines()[0] == "unique_id,ds,lstm,lstm-lo-80,lstm-hi-80,lstm-lo-95,lstm-hi-95"
    fc = run("forecast", panel_csv, "-m", "lstm@v1", "--config", path, "--level", "90")
    assert fc.stdout.splitlines()[0] == "unique_id,ds,lstm,lstm-lo-90,lstm-hi-90"


def test_required_options_and_group_commands_from_the_file(panel_csv, tmp_path):
    path = job(tmp_path, TRAIN + '\n[models.list]\nregistry = "{registry}"\njson = true\n')
    assert run("train", panel_csv, "--config", path).exit_code == 0
    listed = run("models", "list", "--config", path)
    assert listed.exit_code == 0, listed.stderr
    assert listed.stdout.startswith('{"ref": "lstm@v1"')
    with_model = job(tmp_path, TRAIN.replace("[forecast]", '[forecast]\nmodel = "lstm@v1"'), "fc.toml")
    fc = run("forecast", panel_csv, "--config", with_model)
    assert fc.exit_code == 0, fc.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[train]\nhorizn = 3\n",
            "[train] unknown key 'horizn'; the options of train are model, lookback, horizon",
        ),
        ('[train]\nhorizon = "144"\n', '[train] horizon = "144": expected an integer, got str'),
        ("[train]\nhorizon = 1.5\n", "[train] horizon = 1.5: expected an integer, got float"),
        ("[train]\nhorizon = 0\n", "[train] horizon = 0: Input should be greater than or equal to 1"),
        ("[train]\nlags = 1\n", "[train] lags = 1: expected true or false, got int"),
        (
            '[train]\nmodel = "gru"\n',
            "[train] model = \"gru\": 'gru' is not one of 'qkan-lstm', 'hqkan-lstm', 'lstm'.",
        ),
        (
            "[train]\nmodel = 1\n",
            "[train] model = 1: expected a string (qkan-lstm, hqkan-lstm, lstm), got int",
        ),
        ('[forecast]\nlevel = ["90"]\n', '[forecast] level = ["90"]: expected an integer or a list of them'),
        ("[trian]\nepochs = 1\n", "unknown key 'trian'; its tables are commands: [evaluate], [forecast]"),
        (
            "[plot.forcast]\ndpi = 80\n",
            "unknown key 'plot.forcast'; its tables are commands: [plot.activations]",
        ),
        ("epochs = 1\n", "unknown key 'epochs'; its tables are commands"),
        ("[train]\nconfig = 'other.toml'\n", "[train] unknown key 'config'"),
        ("[train]\nhorizon = \n", "is not valid TOML: Invalid value (at line 2, column 11)"),
    ],
)
def test_a_bad_job_file_is_one_error_naming_the_key_and_the_file(panel_csv, tmp_path, text, message):
    path = job(tmp_path, text)
    # the whole file is checked on every command: a typo in [train] stops forecast too
    for args in (("train", panel_csv), ("forecast", panel_csv, "-m", "x")):
        result = run(*args, "--config", path)
        assert result.exit_code == 1, result.stdout
        assert result.stdout == ""
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"Error: job file {path}"), result.stderr
        assert message in lines[0], lines[0]
    assert not (tmp_path / "registry").exists() and not (tmp_path / "default-registry").exists()


def test_a_missing_job_file(panel_csv, tmp_path):
    result = run("train", panel_csv, "--config", tmp_path / "nope.toml")
    assert result.exit_code == 1
    assert result.stderr == f"Error: job file {tmp_path / 'nope.toml'}: No such file or directory\n"
