"""``localssl export`` and loading exported encoders (issue 40): the round trip gives the checkpoint's features
(bitwise in fp32, close in bf16), no pickle is read, a corrupt, renamed or mismatched file is refused with one
line before anything is used, the model card holds what made the encoder and what it scores, ``localssl probe``
takes an exported file, and shipping replaces a name's older file."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TINY, write_cifar_pickles

import localssl
from localssl.build import build, build_encoder, resolve_device
from localssl.checkpoint import load_latest
from localssl.cli import main
from localssl.config import load_config, read_run_config
from localssl.data import data_info, load_split
from localssl.evaluate.card import probe_accuracy, training_time
from localssl.evaluate.export import export_run
from localssl.evaluate.features import FeatureExtractor
from localssl.evaluate.frozen import frozen_extractor
from localssl.evaluate.pretrained import (
    WeightsError,
    initial_encoder,
    load_encoder,
    read_exported,
    shipped,
)
from localssl.views.base import Normalize

pytestmark = pytest.mark.usefixtures("one_thread")

PROBE = ["probe.epochs=1", "probe.val_size=5", "probe.progress=false"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny CLAPP++ run (2 steps, fake CIFAR-10) and random init of its network, both probed."""
    base = tmp_path_factory.mktemp("export")
    root = write_cifar_pickles(base / "data")
    common = [*TINY, "train.max_steps_per_epoch=2", f"data.root={root}", f"out_dir={base / 'runs'}", *PROBE]
    torch.set_num_threads(1)
    run = localssl.pretrain(load_config("clapp++", [*common, "train.precision=fp32"]))
    localssl.probe(run)
    rand = localssl.pretrain(load_config("random", [*common, "train.precision=fp32"]))
    localssl.probe(rand)
    return {"run": Path(run), "random": Path(rand), "root": root, "base": base}


@pytest.fixture(scope="module")
def exported(runs):
    return export_run(runs["run"], out_dir=runs["base"] / "out", baseline=runs["random"])


def _images(runs, n=16):
    cfg = read_run_config(runs["run"])
    info = data_info(cfg.data)
    return load_split(cfg.data.name, info.test_split, cfg.data.root, info).images[:n]


def _checkpoint_features(runs, images):
    """The oracle: the run's checkpoint loaded into a freshly built encoder, read out in fp32."""
    cfg = read_run_config(runs["run"])
    info = data_info(cfg.data)
    encoder = build_encoder(cfg, info)
    encoder.load_state_dict(load_latest(runs["run"])[0]["encoder"])
    encoder.eval()
    return FeatureExtractor(encoder, Normalize(info.mean, info.std), list(info.pool_kernels), list(range(6)))(images)


def test_round_trip_fp32_gives_the_checkpoints_features_bitwise(runs, exported):
    assert exported.path.name == f"clapp++-{exported.sha256[:12]}.safetensors"
    assert hashlib.sha256(exported.path.read_bytes()).hexdigest() == exported.sha256
    encoder = localssl.load_encoder(exported.path)
    assert not encoder.training and not any(p.requires_grad for p in encoder.parameters())
    ckpt = load_latest(runs["run"])[0]["encoder"]
    assert all(torch.equal(encoder.state_dict()[k], v) for k, v in ckpt.items())
    images = _images(runs)
    assert torch.equal(localssl.features(encoder, images), _checkpoint_features(runs, images))
    # the probe's own read-out (its fast path) gives the same features from the file as from the run
    cfg = read_run_config(runs["run"])
    device = resolve_device("cpu")
    from_run, meta_run = frozen_extractor(cfg, runs["run"], device)
    from_file, meta_file = frozen_extractor(cfg, runs["run"], device, weights=exported.path)
    assert torch.equal(from_run.extract(images), from_file.extract(images))
    assert meta_file["checkpoint_step"] == meta_run["checkpoint_step"] == 2


def test_bf16_export_is_half_the_size_and_close(runs, exported, tmp_path):
    half = export_run(runs["run"], dtype="bf16", out_dir=tmp_path)
    assert half.sha256 != exported.sha256 and half.bytes < 0.6 * exported.bytes
    images = _images(runs)
    want = _checkpoint_features(runs, images)
    got = localssl.features(load_encoder(half.path), images)
    rel = ((got - want).norm() / want.norm()).item()
    assert 0 < rel < 1e-2, rel  # bf16 keeps 8 bits of mantissa: relative error ~2^-9 per weight
    assert json.loads(half.card.read_text())["dtype"] == "bf16"


def test_loading_never_unpickles(exported, runs, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("an exported encoder was loaded through pickle")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    encoder = load_encoder(exported.path)
    assert localssl.features(encoder, _images(runs, 4)).shape[0] == 4
    cfg = read_run_config(runs["run"])
    frozen_extractor(cfg, runs["run"], resolve_device("cpu"), weights=exported.path)


def _copy(exported, folder: Path, name: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (name or exported.path.name)
    shutil.copy(exported.path, target)
    return target


def test_corrupt_renamed_or_mismatched_files_are_refused(exported, tmp_path, capsys):
    bad = _copy(exported, tmp_path / "corrupt")
    data = bytearray(bad.read_bytes())
    data[-3] ^= 0xFF  # one weight's byte
    bad.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="does not match the hash in its name"):
        load_encoder(bad)
    assert main(["probe", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "corrupt" in err and "export it again" in err
    short = _copy(exported, tmp_path / "short")
    short.write_bytes(exported.path.read_bytes()[:100])
    with pytest.raises(WeightsError, match="does not match the hash"):
        load_encoder(short)
    with pytest.raises(WeightsError, match="not named NAME-<sha256 prefix>"):
        load_encoder(_copy(exported, tmp_path / "plain", "encoder.safetensors"))
    with pytest.raises(WeightsError, match="exported as 'clapp\\+\\+' and renamed"):
        load_encoder(_copy(exported, tmp_path / "other", f"mine-{exported.sha256[:12]}.safetensors"))
    with_card = _copy(exported, tmp_path / "card")
    card = json.loads(exported.card.read_text())
    (with_card.with_suffix(".json")).write_text(json.dumps({**card, "sha256": "0" * 64}))
    with pytest.raises(WeightsError, match="does not match the sha256 its model card"):
        load_encoder(with_card)


def test_the_model_card(runs, exported):
    card = json.loads(exported.card.read_text())
    cfg = read_run_config(runs["run"])
    assert card["sha256"] == exported.sha256 and card["file"] == exported.path.name
    assert card["preset"] == "clapp++" and card["config"] == cfg.to_dict() and card["dtype"] == "fp32"
    recorded = json.loads((runs["run"] / "dataset.json").read_text())
    assert card["data"]["manifest"] == recorded
    assert card["data"]["fingerprint"]["train"] == recorded["splits"]["train"]["fingerprint"]
    assert card["training"]["steps"] == 2 and card["training"]["epochs"] == 1
    assert card["training"]["wall_s"] > 0 and card["training"]["machine"]
    run_probe = json.loads((runs["run"] / "probe.json").read_text())
    assert card["probe"]["test_acc_pct"] == pytest.approx(run_probe["test_acc_pct"])
    assert card["probe"]["protocol"] == "honest" and "held-out train images" in card["probe"]["description"]
    rand_probe = json.loads((runs["random"] / "probe.json").read_text())
    assert card["random_init"]["test_acc_pct"] == pytest.approx(rand_probe["test_acc_pct"])
    assert "MIT" in card["licence"] and card["parameters"] == sum(
        p.numel() for p in load_encoder(exported.path).parameters()
    )
    # the reproducing command rebuilds the run's settings
    words = card["command"].split()
    assert words[:3] == ["localssl", "pretrain", "clapp++"]
    again = load_config("clapp++", [*words[3:], f"data.root={cfg.data.root}"]).to_dict()
    for section in ("model", "objective", "rule", "views"):
        assert again[section] == cfg.to_dict()[section]
    for key in ("epochs", "batch_size", "lr", "max_steps_per_epoch", "seed"):
        assert again["train"][key] == cfg.to_dict()["train"][key]
    md = exported.markdown.read_text()
    assert exported.sha256 in md and card["command"] in md and "random init" in md


def test_probe_accuracy_reads_old_and_percent_keys():
    assert probe_accuracy({"test_acc": 0.5}, "test") == 50.0
    assert probe_accuracy({"test_acc_percent": 61.25, "test_acc": 0.1}, "test") == 61.25
    assert probe_accuracy({"test_acc_pct": 61.25}, "test") == 61.25
    assert probe_accuracy({"val_acc_pct": 12.0}, "val") == 12.0
    assert probe_accuracy({"best_test_acc_selected_on_test": 0.9}, "test") is None
    assert training_time(Path("/nonexistent"))["wall_s"] is None


def test_training_time_counts_the_epochs_of_a_killed_call(tmp_path):
    """timing.json is written when a call ends: a call killed after checkpointing epochs is missing from it, while
    metrics.csv keeps those epochs' seconds. The wall is then the epochs', the CPU unknown (not the calls' part)."""
    (tmp_path / "metrics.csv").write_text("epoch,step,seconds\n1,10,100.0\n2,20,100.0\n3,30,50.0\n")
    (tmp_path / "timing.json").write_text(json.dumps({"train_wall_s": 55.0, "train_cpu_s": 100.0}))  # call 2 only
    t = training_time(tmp_path)
    assert t["wall_s"] == 250.0 and t["cpu_s"] is None and t["cpu_s_recorded"] == 100.0
    assert "did not end" in t["source"]
    (tmp_path / "timing.json").write_text(json.dumps({"train_wall_s": 260.0, "train_cpu_s": 500.0}))  # every call
    t = training_time(tmp_path)
    assert (t["wall_s"], t["cpu_s"]) == (260.0, 500.0) and t["source"].startswith("timing.json")


def test_export_refuses_bad_requests_before_writing(runs, tmp_path, capsys):
    out = tmp_path / "never"
    for argv in (
        ["export", str(runs["run"]), "--out", str(out), "--name", "a/b"],
        ["export", str(runs["run"]), "--out", str(out), "--name", "x.y"],
        ["export", str(runs["run"]), "--ship", "clapp++", "--out", str(out)],
        ["export", str(tmp_path), "--out", str(out)],
        ["export", str(runs["run"]), "--out", str(out), "--baseline", str(runs["run"])],
    ):
        assert main(argv) == 2, argv
        assert capsys.readouterr().err.strip().count("\n") == 0
        assert not out.exists()


def test_probe_takes_an_exported_file(runs, exported, tmp_path, capsys):
    out = tmp_path / "probe"
    assert main(["probe", str(exported.path), "--out", str(out), *PROBE]) == 0
    result = json.loads((out / "probe.json").read_text())
    run_result = json.loads((runs["run"] / "probe.json").read_text())
    assert result["test_acc_pct"] == run_result["test_acc_pct"] and result["val_acc_pct"] == run_result["val_acc_pct"]
    assert result["weights_sha256"] == exported.sha256 and result["checkpoint_step"] == 2
    assert localssl.probe(exported.path, PROBE, out_dir=tmp_path / "api")["test_acc_pct"] == run_result["test_acc_pct"]
    assert main(["probe", str(runs["run"]), "--out", str(out)]) == 2  # --out is for exported files only
    capsys.readouterr()


def test_initial_encoder_is_the_runs_initialisation(runs, exported):
    cfg = read_run_config(runs["run"])
    start = build(cfg).encoder.state_dict()
    state = initial_encoder(read_exported(exported.path)).state_dict()
    assert all(torch.equal(state[k], v) for k, v in start.items())


def test_shipping_replaces_the_names_older_file(runs, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LOCALSSL_WEIGHTS", str(tmp_path / "weights"))
    assert main(["export", str(runs["run"]), "--ship", "tiny_clapp", "--baseline", str(runs["random"])]) == 0
    first = Path(capsys.readouterr().out.strip())
    assert first.parent == tmp_path / "weights" and shipped() == {"tiny_clapp": first}
    assert main(["export", str(runs["run"]), "--ship", "tiny_clapp", "--dtype", "bf16"]) == 0
    second = Path(capsys.readouterr().out.strip())
    assert second != first and not first.exists() and not first.with_suffix(".json").exists()
    assert sorted(p.name for p in second.parent.iterdir()) == sorted(
        second.with_suffix(s).name for s in (".json", ".md", ".safetensors")
    )
    assert shipped() == {"tiny_clapp": second}
    card = json.loads(second.with_suffix(".json").read_text())  # a card naming a file elsewhere is not an entry
    (second.parent / "evil-0123456789ab.json").write_text(
        json.dumps({**card, "name": "evil", "file": f"../{runs['run'].name}/evil-0123456789ab.safetensors"})
    )
    assert shipped() == {"tiny_clapp": second}
    (second.parent / "evil-0123456789ab.json").unlink()
    assert load_encoder("tiny_clapp").exported.sha256 == read_exported(second).sha256
    with pytest.raises(FileNotFoundError, match="shipped: tiny_clapp"):
        load_encoder("no_such_encoder")


ROOT = Path(__file__).resolve().parents[1]


def _hub_list() -> list[str]:
    """What ``torch.hub.list`` lists (its public callables) for the clone's hubconf.py, imported afresh as
    ``torch.hub.load(..., source="local")`` imports it (``torch.hub.list`` takes GitHub repositories only)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("hubconf_under_test", ROOT / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return sorted(f for f in dir(module) if callable(getattr(module, f)) and not f.startswith("_"))


def test_hubconf_has_an_entry_per_shipped_encoder(runs, tmp_path, monkeypatch):
    monkeypatch.setenv("LOCALSSL_WEIGHTS", str(tmp_path / "weights"))
    assert _hub_list() == ["encoder"]
    done = export_run(runs["run"], ship="tiny_clapp", baseline=runs["random"])
    assert _hub_list() == ["encoder", "tiny_clapp"]
    hub = torch.hub.load(str(ROOT), "tiny_clapp", source="local", pretrained=True)
    direct = load_encoder(done.path)
    assert all(torch.equal(hub.state_dict()[k], v) for k, v in direct.state_dict().items())
    assert not hub.training
    images = _images(runs, 4)
    assert torch.equal(localssl.features(hub, images), localssl.features(direct, images))
    start = torch.hub.load(str(ROOT), "tiny_clapp", source="local", pretrained=False)
    assert all(
        torch.equal(start.state_dict()[k], v)
        for k, v in build(read_run_config(runs["run"])).encoder.state_dict().items()
    )
    by_path = torch.hub.load(str(ROOT), "encoder", source="local", path=str(done.path))
    assert torch.equal(localssl.features(by_path, images), localssl.features(direct, images))


def test_hub_entry_fetches_a_file_kept_out_of_the_clone_by_url(runs, tmp_path, monkeypatch):
    """A card with a URL: the file is downloaded with the hash in its name checked, then loaded as any other."""
    monkeypatch.setenv("LOCALSSL_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    done = export_run(runs["run"], ship="tiny_clapp")
    hosted = tmp_path / "hosted"
    hosted.mkdir()
    shutil.move(done.path, hosted / done.path.name)
    card = json.loads(done.card.read_text())
    done.card.write_text(json.dumps({**card, "url": (hosted / done.path.name).as_uri()}))
    hub = torch.hub.load(str(ROOT), "tiny_clapp", source="local")
    assert (tmp_path / "hub" / "checkpoints" / done.path.name).is_file()
    assert hub.exported.sha256 == done.sha256
    (tmp_path / "hub" / "checkpoints" / done.path.name).unlink()
    bad = hosted / done.path.name
    bad.write_bytes(bad.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(RuntimeError, match="invalid hash value"):
        torch.hub.load(str(ROOT), "tiny_clapp", source="local")


def _shipped_names() -> list[str]:
    try:
        return sorted(shipped())
    except WeightsError:
        return ["(the shipped weights folder holds two files of one name)"]  # the test then fails, naming it


@pytest.mark.slow
@pytest.mark.parametrize("name", _shipped_names())
def test_a_shipped_cards_accuracy_is_reproduced_by_probing_the_shipped_file(name, tmp_path):
    """``localssl probe NAME`` with the card's probe settings gives the card's test accuracy (the data must be
    on disk: ``localssl data download``). Runs for every encoder in ``localssl/weights/``."""
    path = shipped()[name]
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["probe"] is not None, f"{name}: its card has no probe accuracy"
    settings = {k: v for k, v in card["probe"]["settings"].items() if k not in ("progress", "cache_features")}
    # the precision its features were read out in (bf16 and fp32 read-outs differ by ~0.1 point): cards made before
    # they recorded it were read out where the run trained, in the precision it trained in
    settings["precision"] = card["probe"].get("readout_precision") or card["config"]["train"]["precision"]
    overrides = [f"probe.{k}={json.dumps(v)}" for k, v in settings.items()]
    result = localssl.probe(name, [*overrides, "probe.progress=false"], out_dir=tmp_path)
    assert result["weights_sha256"] == card["sha256"]
    assert result["readout_precision"] == settings["precision"]
    assert result["test_acc_pct"] == pytest.approx(card["probe"]["test_acc_pct"], abs=0.1)


def test_the_probe_reads_out_in_the_precision_asked_and_records_it(exported, tmp_path):
    """``probe.precision``: by default the run's own (this run trained in fp32), else the one named; the result
    names it, and the default reads out exactly as fp32 named does."""
    got = {}
    for precision in ("run", "fp32", "bf16"):
        res = localssl.probe(exported.path, [*PROBE, f"probe.precision={precision}"], out_dir=tmp_path / precision)
        got[precision] = res
    assert [got[p]["readout_precision"] for p in ("run", "fp32", "bf16")] == ["fp32", "fp32", "bf16"]
    assert (
        got["run"]["test_acc_pct"] == got["fp32"]["test_acc_pct"]
        and got["run"]["val_acc_pct"] == got["fp32"]["val_acc_pct"]
    )


def test_exported_encoder_probed_on_other_images_records_the_transfer(runs, exported, tmp_path):
    """``data.name=OTHER`` probes exported weights on another data set's own splits; the pair is recorded."""
    res = localssl.probe(exported.path, ["data.name=cifar10-mini", *PROBE], out_dir=tmp_path / "mini")
    assert res["transfer"] == {"pretrained_on": "cifar10", "probed_on": "cifar10-mini"}
    assert res["n_test"] == 1000 and res["n_train"] + res["n_val"] == 4000  # the shipped subset's splits
    assert json.loads((tmp_path / "mini" / "probe.json").read_text())["transfer"]["probed_on"] == "cifar10-mini"
    with pytest.raises(ValueError, match="data.name for exported weights"):
        localssl.probe(runs["run"], ["data.name=cifar10-mini"])
