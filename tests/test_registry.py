import json
import multiprocessing as mp

import pytest
import torch

from qkanforecast.config import DataConfig, ModelConfig, TrainConfig
from qkanforecast.errors import QKANForecastError
from qkanforecast.manifest import Epoch, Manifest, ScalerState, Schema, Training
from qkanforecast.registry import FORMAT_VERSION, Registry, default_root

STATE = {"w": torch.arange(6.0).reshape(2, 3)}
MANIFEST = Manifest(
    name="",
    model=ModelConfig(model="lstm"),
    data=DataConfig(),
    train=TrainConfig(),
    schema=Schema(freq="h", series=1),
    num_parameters=6,
    scaler=ScalerState("standard", ["a"], [0.0], [1.0]),
    training=Training(None, 10, 0, 0.1, 1, 0.5, 0.5),
    history=[Epoch(1, 0.5, 0.5, 0.1, 100.0)],
)


def test_publish_resolve_and_load(tmp_path):
    reg = Registry(tmp_path)
    first = reg.publish("net", STATE, MANIFEST)
    second = reg.publish("net", STATE, MANIFEST)
    assert (first.ref, second.ref) == ("net@v1", "net@v2")
    assert reg.resolve("net") == reg.resolve("net@latest") == tmp_path / "net" / "v2"
    assert reg.resolve("net@v1") == tmp_path / "net" / "v1"
    assert reg.resolve(str(tmp_path / "net" / "v1")) == tmp_path / "net" / "v1"
    entry = reg.get("net@v1")
    assert entry.manifest.format_version == FORMAT_VERSION
    assert entry.manifest.torch_version == torch.__version__
    assert torch.equal(reg.load_state_dict(entry)["w"], STATE["w"])
    assert [e.ref for e in reg.entries()] == ["net@v1", "net@v2"]
    assert not [p for p in (tmp_path / "net").iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    "ref, message",
    [
        ("nope", "unknown model 'nope' in registry"),
        ("net@v9", "unknown version 'net@v9'; net has v1"),
        ("net@9", "invalid reference 'net@9': use NAME, NAME@latest or NAME@vN"),
        ("../net", "../net: not a model version directory (no manifest.json)"),
        (".hidden", "invalid model name '.hidden'"),
        ("a..b", "invalid model name 'a..b'"),
    ],
)
def test_bad_references(tmp_path, ref, message):
    reg = Registry(tmp_path)
    reg.publish("net", STATE, MANIFEST)
    with pytest.raises(QKANForecastError, match=None) as info:
        reg.get(ref)
    assert str(info.value).startswith(message)


def test_refuses_tampered_weights_unreadable_and_newer_manifests(tmp_path):
    reg = Registry(tmp_path)
    entry = reg.publish("net", STATE, MANIFEST)
    torch.save({"w": torch.zeros(2, 3)}, entry.path / "model.pt")
    with pytest.raises(QKANForecastError, match="does not match the manifest"):
        reg.load_state_dict(reg.get("net"))
    manifest = json.loads((entry.path / "manifest.json").read_text())
    (entry.path / "manifest.json").write_text(json.dumps({**manifest, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(QKANForecastError, match="newer than this qkanforecast"):
        reg.get("net")
    (entry.path / "manifest.json").write_text("{not json")
    with pytest.raises(QKANForecastError, match="unreadable manifest"):
        reg.get("net")


def test_remove_one_version_or_all(tmp_path):
    reg = Registry(tmp_path)
    for _ in range(3):
        reg.publish("net", STATE, MANIFEST)
    assert [e.ref for e in reg.remove("net@v2")] == ["net@v2"]
    assert reg.versions("net") == [1, 3]
    assert (
        reg.publish("net", STATE, MANIFEST).version == 4
    )  # numbers are never reused while a later one exists
    assert len(reg.remove("net")) == 3
    assert not (tmp_path / "net").exists()
    with pytest.raises(QKANForecastError, match="unknown model"):
        reg.remove("net")


def test_root_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("QKANFORECAST_HOME", str(tmp_path / "home"))
    assert default_root() == tmp_path / "home"
    assert Registry().root == tmp_path / "home"


def _publish_many(root, count, queue):
    reg = Registry(root)
    queue.put([reg.publish("shared", STATE, MANIFEST).version for _ in range(count)])


@pytest.mark.slow
def test_concurrent_publishers_never_share_a_version(tmp_path):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_publish_many, args=(tmp_path, 10, queue)) for _ in range(3)]
    for p in procs:
        p.start()
    versions = sum((queue.get(timeout=120) for _ in procs), [])
    for p in procs:
        p.join()
    assert sorted(versions) == list(range(1, 31))
    assert Registry(tmp_path).versions("shared") == list(range(1, 31))
