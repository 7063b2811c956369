"""``train.precision=auto`` (the default): bf16 + channels_last where the device computes bf16 natively, fp32
elsewhere; what it chose is recorded in config.yaml, kept on resume on other hardware (with a note), and
used by the probes' feature extraction.

Oracle: the detection is monkeypatched (a CPU "with" and "without" bf16 units), so these tests pass the
same on any CPU; the features are compared with the fp32 read-out within bf16 rounding."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from conftest import TINY as CONFTEST_TINY

from localssl.checkpoint import check_config_unchanged, config_fingerprint
from localssl.config import load_config
from localssl.evaluate.features import FeatureExtractor
from localssl.models.base import LayeredEncoder
from localssl.train import fast_path as fp
from localssl.train import pretrain, resolve_config, resume
from localssl.views.base import Normalize

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = [*CONFTEST_TINY, "train.max_steps_per_epoch=2"]


def cpu_with_bf16(monkeypatch, avx512_bf16: bool, amx: bool = False) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "want"), [(True, False, "bf16"), (False, True, "bf16"), (False, False, "fp32")]
)
def test_auto_resolves_by_the_cpus_bf16_units(monkeypatch, avx512_bf16, amx, want):
    cpu_with_bf16(monkeypatch, avx512_bf16, amx)
    train = fp.resolve_fast_path(load_config("clapp++").train, torch.device("cpu"))
    assert (train.precision, train.precision_requested, train.channels_last) == (want, "auto", want == "bf16")


def test_auto_is_fp32_where_torch_cannot_tell(monkeypatch):
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert fp.auto_precision(torch.device("cpu")) == "fp32"


def test_explicit_settings_are_kept(monkeypatch):
    cpu_with_bf16(monkeypatch, True)
    cfg = load_config("clapp++", ["train.precision=fp32", "train.channels_last=true"])
    train = fp.resolve_fast_path(cfg.train, torch.device("cpu"))
    assert (train.precision, train.precision_requested, train.channels_last) == ("fp32", None, True)
    with pytest.raises(ValueError, match="train.precision"):
        load_config("clapp++", ["train.precision=fp16"])


def test_config_yaml_records_what_auto_chose(monkeypatch, cifar_root, tmp_path):
    cpu_with_bf16(monkeypatch, True)
    run = pretrain(load_config("clapp++", [*TINY, f"data.root={cifar_root}", f"out_dir={tmp_path}"]))
    train = yaml.safe_load((run / "config.yaml").read_text())["train"]
    assert (train["precision"], train["precision_requested"], train["channels_last"]) == ("bf16", "auto", True)
    # resolving a resolved config changes nothing: the fingerprint a resume checks is stable
    cfg = load_config("clapp++", [*TINY, f"data.root={cifar_root}"])
    once = resolve_config(cfg)
    assert config_fingerprint(resolve_config(once)) == config_fingerprint(once)


def test_resume_on_other_hardware_keeps_the_recorded_choice(monkeypatch, cifar_root, tmp_path, capsys):
    cpu_with_bf16(monkeypatch, True)
    run = pretrain(load_config("clapp++", [*TINY, f"data.root={cifar_root}", f"out_dir={tmp_path}"]))
    cpu_with_bf16(monkeypatch, False)  # "another machine": auto would choose fp32 here
    capsys.readouterr()
    resume(run, ["train.epochs=2"])
    err = capsys.readouterr().err
    assert "train.precision=auto chose bf16" in err and "Keeping bf16" in err
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["precision"] == "bf16"
    resume(run, ["train.epochs=3", "train.precision=fp32"])  # told explicitly: switches (not bit-exact)
    train = yaml.safe_load((run / "config.yaml").read_text())["train"]
    assert (train["precision"], train["precision_requested"]) == ("fp32", None)
    assert "would choose" not in capsys.readouterr().err


def test_a_checkpoint_fingerprint_holding_the_precision_still_resumes(tmp_path):
    cfg = load_config("clapp++", ["train.precision=bf16"])
    old = json.loads(config_fingerprint(cfg))
    old["train.precision"] = "fp32"  # written before train.precision became overridable on resume
    check_config_unchanged({"config": json.dumps(old)}, cfg, tmp_path)


def _encoder() -> LayeredEncoder:
    torch.manual_seed(0)
    conv = [torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU())]
    conv.append(torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2)))
    return LayeredEncoder(conv)


def test_probe_features_on_the_fast_path_are_float32_and_match_fp32():
    images = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    norm = Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    ref = FeatureExtractor(_encoder(), norm, [4, 2], [0, 1]).extract(images)
    fast = FeatureExtractor(_encoder(), norm, [4, 2], [0, 1])
    fast.fast_path(fp.autocast_for("bf16", torch.device("cpu")), torch.channels_last)
    got = fast.extract(images)
    assert got.dtype == torch.float32 and got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=2e-2, atol=2e-2 * float(ref.abs().max()))
    assert not torch.equal(got, ref)  # it did run in bf16
