"""Checkpoints: nothing loaded runs code, a corrupt file falls back to its predecessor, logs stay exact."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from localssl.checkpoint import CorruptCheckpointError, UnsafeCheckpointError, load_checkpoint
from localssl.cli import main
from localssl.config import load_config
from localssl.train import pretrain, resume
from localssl.utils import trim_csv

TINY = ["model.width=0.0625", "train.batch_size=8", "train.device=cpu", "train.progress=false"]


class _Exploit:
    """Unpickling this calls ``os.mkdir(marker)``: the code a hostile checkpoint would run."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _plant(path, marker) -> None:
    torch.save({"encoder": {}, "epoch": 1, "payload": _Exploit(str(marker))}, path)


def test_the_planted_pickle_does_run_code_without_weights_only(tmp_path):
    """The exploit is real: a plain unpickle creates the marker (so the refusals below mean something)."""
    marker = tmp_path / "pwned"
    _plant(tmp_path / "evil.pt", marker)
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()


def test_probe_and_resume_refuse_a_malicious_checkpoint(cifar_root, tmp_path, capsys):
    run = pretrain(load_config("clapp++", [*TINY, f"data.root={cifar_root}", f"out_dir={tmp_path}", "train.epochs=1"]))
    marker = tmp_path / "pwned"
    _plant(run / "checkpoint.pt", marker)
    with pytest.raises(UnsafeCheckpointError, match="checkpoint.pt"):
        load_checkpoint(run / "checkpoint.pt")
    assert main(["probe", str(run)]) != 0
    err = capsys.readouterr().err
    assert str(run / "checkpoint.pt") in err and "refusing" in err
    assert main(["pretrain", "--resume", str(run), "train.epochs=2"]) != 0
    err = capsys.readouterr().err
    assert str(run / "checkpoint.pt") in err and "refusing" in err
    assert not marker.exists()


def test_resume_falls_back_to_the_previous_checkpoint(cifar_root, tmp_path, capsys):
    cfg = [*TINY, f"data.root={cifar_root}", "train.log_every=2"]
    full = pretrain(load_config("clapp++", [*cfg, f"out_dir={tmp_path / 'a'}", "train.epochs=3"]))
    run = pretrain(load_config("clapp++", [*cfg, f"out_dir={tmp_path / 'b'}", "train.epochs=2"]))
    assert load_checkpoint(run / "checkpoint.prev.pt")["epoch"] == 1
    blob = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(blob[: len(blob) // 2])  # truncated, as by a full disk
    with pytest.raises(CorruptCheckpointError, match="checkpoint.pt"):
        load_checkpoint(run / "checkpoint.pt")
    resume(run, ["train.epochs=3"])
    assert f"using the earlier checkpoint {run / 'checkpoint.prev.pt'}" in capsys.readouterr().err
    a, b = load_checkpoint(full / "checkpoint.pt"), load_checkpoint(run / "checkpoint.pt")
    assert a["global_step"] == b["global_step"]
    for name, tensor in a["encoder"].items():
        assert torch.equal(tensor, b["encoder"][name]), name
    for log in ("metrics.csv", "steps.csv"):  # epoch 2 was logged twice, the duplicate rows were trimmed
        rows = [line.split(",")[:3] for line in (run / log).read_text().splitlines()]  # epoch, step, first loss
        assert rows == [line.split(",")[:3] for line in (full / log).read_text().splitlines()], log


def test_garbage_is_named_as_corrupt(tmp_path):
    for blob in (b"", b"not a checkpoint at all", pickle.dumps([1, 2, 3])[:5]):
        (tmp_path / "checkpoint.pt").write_bytes(blob)
        with pytest.raises(CorruptCheckpointError, match="checkpoint.pt"):
            load_checkpoint(tmp_path / "checkpoint.pt")


def test_trim_csv_drops_rows_past_the_step_and_a_torn_last_row(tmp_path):
    path = tmp_path / "steps.csv"
    path.write_bytes(b"epoch,step,loss\r\n1,2,0.5\r\n1,4,0.4\r\n2,6,0.3\r\n2,8,0.")
    trim_csv(path, 4)
    assert path.read_bytes() == b"epoch,step,loss\r\n1,2,0.5\r\n1,4,0.4\r\n"
