"""Data parallelism: N gloo ranks on CPU must train exactly like one process over the same global batch."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import GLOO_THREADS, SIXTY_IMAGES, rank_environ, start_ranks

from localssl.config import load_config
from localssl.distributed import SINGLE, World, rank_seed, rank_slice
from localssl.rules.base import StepContext
from localssl.train import Trainer, load_pretrain_data
from localssl.utils import epoch_seed

REPO = Path(__file__).resolve().parents[1]
# 60 images, 6 per rank, 2 ranks: 5 global steps per epoch, 2 epochs.
SETUP = list(SIXTY_IMAGES)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


WORKER = (
    """
import os, sys, torch.distributed as dist
from localssl.config import load_config
from localssl.train import pretrain
dist.init_process_group("gloo")  # from torchrun's variables (RANK, WORLD_SIZE, MASTER_ADDR/PORT)
for item in sys.argv[1:]:
    preset, *overrides = item.split(" ")
    print(pretrain(load_config(preset, overrides)))
dist.destroy_process_group()"""
    + GLOO_THREADS
    + """
if gloo_threads():  # they would outlive the interpreter and may abort its exit (SIGABRT)
    sys.exit(f"the process group was not freed: threads {gloo_threads()} remain")
"""
)


def _launch(world_size: int, runs: list[str], cwd: Path) -> list[list[str]]:
    """Start ``world_size`` ranks with the environment torchrun would set; each rank trains ``runs``
    (``"PRESET key=value ..."``) one after the other in one process group (one import of torch)."""
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, *runs],
            cwd=cwd,
            env=rank_environ(rank, world_size, port),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(world_size)
    ]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        outs.append(out.strip().splitlines())
    return outs


def _reference(cfg, world_size: int) -> dict[str, torch.Tensor]:
    """One process: every global step averages the gradients of the ranks' slices, each slice with its
    rank's own augmentation RNG stream, then steps one optimizer (written out, not via the trainer)."""
    torch.set_num_threads(1)
    trainer = Trainer(cfg, Path("unused"), data=load_pretrain_data(cfg))
    rule, encoder = trainer.comp.rule, trainer.comp.encoder
    params = list(rule.parameters_to_train(encoder))
    bs, n = cfg.train.batch_size, len(trainer.images)
    for epoch in range(cfg.train.epochs):
        seed = epoch_seed(cfg.train.seed, epoch)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        rng = []
        for r in range(world_size):
            torch.manual_seed(rank_seed(seed, r))
            rng.append(torch.get_rng_state())
        for step in range(n // (bs * world_size)):
            total = [torch.zeros_like(p) for p in params]
            for r in range(world_size):
                torch.set_rng_state(rng[r])
                start = step * bs * world_size + r * bs
                views = trainer.make_views(perm[start : start + bs])
                trainer.optimizer.zero_grad(set_to_none=True)
                rule.step(encoder, views, StepContext(autocast=trainer.step_context.autocast))  # the run's precision
                rng[r] = torch.get_rng_state()
                total = [t + (0 if p.grad is None else p.grad) for t, p in zip(total, params)]
            for p, t in zip(params, total):
                p.grad = t / world_size
            trainer.optimizer.step()
    torch.set_num_threads(2)
    return {**{f"encoder.{k}": v for k, v in encoder.state_dict().items()}, **rule.state_dict()}


def _weights(run: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    return {**{f"encoder.{k}": v for k, v in ckpt["encoder"].items()}, **ckpt["rule"]}


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_two_gloo_ranks_equal_one_process_over_the_global_batch(cifar_root, tmp_path):
    """Layer streaming with per-layer optimizers and per-layer async all-reduce (clapp++), and backprop
    (gradients reduced after its single backward), each against the written-out 1-process reference."""
    runs = {
        "clapp++": [*SETUP, "train.step_each_layer=true", f"data.root={cifar_root}", f"out_dir={tmp_path / 'local'}"],
        "bp-clapp++": [*SETUP, f"data.root={cifar_root}", f"out_dir={tmp_path / 'bp'}"],
    }
    outs = _launch(2, [" ".join([p, *o]) for p, o in runs.items()], tmp_path)
    assert outs[0] == outs[1], "every rank must train in the same run directory"
    for (preset, overrides), run in zip(runs.items(), outs[0]):
        got = _weights(Path(run))
        cfg = load_config(preset, [o for o in overrides if not o.startswith("train.step_each_layer")])
        assert _max_diff(got, _reference(cfg, 2)) < 1e-5, preset
        start = Trainer(cfg, Path("unused"), data=load_pretrain_data(cfg)).comp
        init = {**{f"encoder.{k}": v for k, v in start.encoder.state_dict().items()}, **start.rule.state_dict()}
        assert _max_diff(got, init) > 1e-3, f"{preset}: the weights did not move, the comparison is empty"


def test_rank_slices_partition_the_global_batch():
    bs, world = 5, 3
    for step in range(4):
        taken = [range(200)[rank_slice(step, bs, World(r, world, r))] for r in range(world)]
        flat = [i for t in taken for i in t]
        assert sorted(flat) == list(range(step * bs * world, (step + 1) * bs * world))
        assert all(len(t) == bs for t in taken)
    assert rank_slice(2, bs, SINGLE) == slice(10, 15)  # one rank: the plain single-process batches


def test_rank_seeds_differ_and_rank_zero_keeps_the_single_process_seed():
    s = epoch_seed(0, 3)
    assert rank_seed(s, 0) == s
    assert len({rank_seed(s, r) for r in range(8)}) == 8


@pytest.mark.slow
def test_torchrun_resume_continues_exactly(cifar_root, tmp_path):
    """The real launcher: 2 epochs in one go == 1 epoch, then ``--resume`` to 2, both under torchrun."""
    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not on PATH")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    base = [torchrun, "--nproc_per_node", "2", "--master_port", str(_free_port()), "-m", "localssl", "pretrain"]
    args = [*SETUP, f"data.root={cifar_root}"]

    def run(*extra: str) -> str:
        base[4] = str(_free_port())
        out = subprocess.run([*base, *extra], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout.strip().splitlines()[-1]

    full = Path(run("clapp++", *args, f"out_dir={tmp_path / 'a'}"))
    assert (full / "checkpoint.pt").exists()
    half = Path(run("clapp++", *args, "train.epochs=1", f"out_dir={tmp_path / 'b'}"))
    run("--resume", str(half), "train.epochs=2")
    assert _max_diff(_weights(full), _weights(half)) == 0.0


@pytest.mark.slow
def test_data_parallel_mid_epoch_checkpoint_resumes_exactly(cifar_root, tmp_path):
    """A mid-epoch checkpoint under torchrun holds every rank's augmentation generators: the run resumed from
    its last one (global step 9 of 10) ends with the uninterrupted run's weights."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")

    def run(*args: str) -> Path:
        launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
        cmd = [*launch, "--master_port", str(_free_port()), "-m", "localssl", "pretrain", *args]
        out = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        return tmp_path / out.stdout.strip().splitlines()[-1]

    full = run("clapp++", *SETUP, "train.checkpoint_every=3", f"data.root={cifar_root}")
    mid = tmp_path / "mid"
    mid.mkdir()
    shutil.copy(full / "config.yaml", mid / "config.yaml")
    shutil.copy(full / "checkpoint.prev.pt", mid / "checkpoint.pt")
    ckpt = torch.load(mid / "checkpoint.pt", weights_only=True)
    assert ckpt["global_step"] == 9 and len(ckpt["position"]["ranks_rng"]) == 2
    run("--resume", str(mid))
    assert _max_diff(_weights(full), _weights(mid)) == 0.0


def test_a_stop_signal_on_one_rank_stops_every_rank_at_the_next_logged_row(cifar_root, tmp_path):
    """SIGTERM to rank 1 alone during global step 2: the ranks agree at the next logged row (step 3), write a
    checkpoint there and exit 130; --resume on 2 ranks ends with the uninterrupted run's weights."""
    common = [*SETUP, f"data.root={cifar_root}", "train.log_every=3"]

    def launch(argv: list[str], code: int, fault: str | None = None) -> list[str]:
        errs = []
        for p in start_ranks(2, argv, tmp_path, fault=fault):
            _, err = p.communicate(timeout=300)
            assert p.returncode == code, err[-3000:]
            errs.append(err)
        return errs

    launch(["pretrain", "clapp++", *common, f"out_dir={tmp_path / 'full'}"], 0)
    errs = launch(["pretrain", "clapp++", *common, f"out_dir={tmp_path / 'stopped'}"], 130, fault="1:2:term")
    assert "stopped: another rank received a stop signal" in errs[0] and "--resume" in errs[0], errs[0][-2000:]
    assert "stopped by SIGTERM" in errs[1], errs[1][-2000:]
    full, stopped = (next((tmp_path / name).iterdir()) for name in ("full", "stopped"))
    ckpt = torch.load(stopped / "checkpoint.pt", weights_only=True)
    assert ckpt["global_step"] == 3 and len(ckpt["position"]["ranks_rng"]) == 2
    launch(["pretrain", "--resume", str(stopped)], 0)
    assert _max_diff(_weights(full), _weights(stopped)) == 0.0


@pytest.mark.slow
def test_data_parallel_online_probe_trains_on_rank_0_and_changes_nothing_else(cifar_root, tmp_path):
    """train.online_probe under torchrun: rank 0 scores the read-outs (extraction and fits on its own), logs
    their accuracy and saves the probe's state; the encoder's weights are those of the same run without the
    probe (the probe draws nothing from the generators the training uses)."""
    common = [*SETUP, "train.log_every=2", f"data.root={cifar_root}"]
    probe = ["train.online_probe=true", "train.online_probe_holdout=12", "train.online_probe_every=4"]
    runs = [
        " ".join(["clapp++", *common, f"out_dir={tmp_path / name}", *extra])
        for name, extra in (("plain", []), ("probe", probe))
    ]
    plain, with_probe = (Path(r) for r in _launch(2, runs, tmp_path)[0])
    assert _max_diff(_weights(plain), _weights(with_probe)) == 0.0
    assert "online_probe" in torch.load(with_probe / "checkpoint.pt", weights_only=True)
    header = (with_probe / "steps.csv").read_text().splitlines()[0]
    assert all(f"probe_acc_pct_l{i}" in header for i in range(1, 7)) and "probe_acc_pct_all" in header
    assert "probe_acc_pct_all" in (with_probe / "metrics.csv").read_text().splitlines()[0]


def test_mean_over_ranks_keeps_the_keys_order_so_csv_columns_match_one_process(tmp_path):
    """A data-parallel run's metrics.csv columns are in the order one process writes them (issue 41): the
    average over ranks returns the keys in their given order, not sorted. Oracle: a one-rank gloo group, where
    the mean is the value itself."""
    import torch.distributed as dist

    from localssl.distributed import mean_over_ranks

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        values = {"loss_l2": torch.tensor(2.0), "loss_l1": torch.tensor(1.0), "probe_acc_pct_all": 50.0}
        out = mean_over_ranks(values, own=("probe_",))
    finally:
        dist.destroy_process_group()
    assert list(out) == ["loss_l2", "loss_l1", "probe_acc_pct_all"]
    assert [float(v) for v in out.values()] == [2.0, 1.0, 50.0]
