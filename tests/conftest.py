"""Shared fixtures: small generated datasets in the official on-disk formats."""

from __future__ import annotations

import gzip
import io
import itertools
import os
import pickle
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from localssl.models.base import LayeredEncoder
from localssl.objectives.base import LayerSpec
from localssl.registry import OBJECTIVES, RULES
from localssl.rules.base import StepContext
from localssl.train.fast_path import auto_precision
from localssl.views.base import ViewBatch

torch.set_num_threads(2)
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/slurm_cluster.py


@pytest.fixture
def one_thread():
    """One intra-op thread for tests of tiny networks: threading only costs time there (OpenMP spinning),
    much more on a shared machine. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def bf16_units(monkeypatch):
    """``LOCALSSL_TEST_BF16=0`` (or ``1``) runs the tests as on a CPU without (with) bf16 units, i.e. with
    ``train.precision=auto`` resolving to fp32 (bf16); unset, as this machine resolves it (what CI runs).
    Subprocesses (torchrun, CLI) still see the real CPU."""
    want = os.environ.get("LOCALSSL_TEST_BF16")
    if want is not None:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: want == "1", raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)


SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def write_cifar_pickles(root: Path, n_train: int = 60, n_test: int = 20, seed: int = 0) -> Path:
    """``cifar-10-batches-py`` with 5 train batches and a test batch (official pickle layout)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    per = n_train // 5
    for i in range(1, 6):
        batch = {b"data": rng.integers(0, 256, (per, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, per))}
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch))
    test = {b"data": rng.integers(0, 256, (n_test, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, n_test))}
    (folder / "test_batch").write_bytes(pickle.dumps(test))
    return root


def write_class_pattern_cifar(root: Path, n_train: int = 200, n_test: int = 100, seed: int = 0) -> Path:
    """CIFAR-10 pickles whose classes are distinguishable (a class-dependent colour blob)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def make(n: int) -> tuple[np.ndarray, list[int]]:
        labels = rng.integers(0, 10, n)
        imgs = rng.integers(0, 60, (n, 3, 32, 32)).astype(np.uint8)
        for i, y in enumerate(labels):
            r, c = divmod(int(y), 5)
            imgs[i, y % 3, 4 + 12 * r : 16 + 12 * r, 2 + 6 * c : 8 + 6 * c] = 230
        return imgs.reshape(n, -1), [int(v) for v in labels]

    per = n_train // 5
    for i in range(1, 6):
        data, labels = make(per)
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps({b"data": data, b"labels": labels}))
    data, labels = make(n_test)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": data, b"labels": labels}))
    return root


def jpeg_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    blob = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(blob) if gz else blob)


@pytest.fixture
def cifar_root(tmp_path: Path) -> Path:
    return write_cifar_pickles(tmp_path / "data")


@pytest.fixture
def pattern_cifar_root(tmp_path: Path) -> Path:
    return write_class_pattern_cifar(tmp_path / "data")


# Source for the torchrun test workers: ``gloo_threads()``, the names of this process's gloo threads (Linux).
GLOO_THREADS = """
def gloo_threads():
    task = "/proc/self/task"
    names = []
    for t in os.listdir(task) if os.path.isdir(task) else []:
        try:
            names.append(open(f"{task}/{t}/comm").read().strip())
        except OSError:
            pass
    return [n for n in names if "gloo" in n]
"""

# The ``localssl`` command in a process with torchrun's environment (:func:`start_ranks`).
# LOCALSSL_TEST_FAULT="RANK:STEP:die|kill|hang|term|usr1" makes that rank die (os._exit), be killed (SIGKILL),
# hang, or receive SIGTERM (SIGUSR1) as it starts global step STEP (1-based). A run that finished (exit 0) must
# leave no gloo thread: a process group still alive after ``destroy_process_group`` keeps its worker threads past
# the interpreter's exit, where they may abort it (SIGABRT, "terminate called without an active exception";
# localssl/distributed.py).
CLI_WORKER = (
    """
import os, signal, sys, time
from localssl.train import Trainer
fault = os.environ.get("LOCALSSL_TEST_FAULT")
if fault:
    rank, step, how = fault.split(":")
    schedule = Trainer.apply_schedule
    def faulty(self, steps_per_epoch):
        if self.world.rank == int(rank) and self.global_step + 1 == int(step):
            if how == "die":
                os._exit(9)
            elif how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            elif how in ("term", "usr1"):
                os.kill(os.getpid(), signal.SIGTERM if how == "term" else signal.SIGUSR1)
            else:
                time.sleep(3600)
        schedule(self, steps_per_epoch)
    Trainer.apply_schedule = faulty
"""
    + GLOO_THREADS
    + """
from localssl.cli import main
code = main(sys.argv[1:])
if code == 0 and gloo_threads():
    print(f"the process group was not freed: threads {gloo_threads()} remain", file=sys.stderr)
    code = 3
sys.exit(code)
"""
)
REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_environ(rank: int, world_size: int, port: int) -> dict[str, str]:
    """The environment ``torchrun`` gives rank ``rank`` (one torch thread, this checkout importable)."""
    return dict(
        os.environ,
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS="1",
        PYTHONPATH=str(REPO),
    )


def start_ranks(n: int, argv: list[str], cwd: Path, fault: str | None = None) -> list[subprocess.Popen]:
    """``torchrun --nproc_per_node=n -m localssl ARGV`` as ``n`` processes (one thread each) of
    :data:`CLI_WORKER`, started and not waited for; ``n=0``: one ``localssl ARGV`` process without torchrun."""
    port = free_port()
    procs = []
    for rank in range(max(n, 1)):
        env = rank_environ(rank, n, port) if n else dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
        if fault:
            env["LOCALSSL_TEST_FAULT"] = fault
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", CLI_WORKER, *argv],
                cwd=cwd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return procs


# The precision `auto` resolves to on this CPU, fixed at import (before any test emulates another CPU):
# for tests whose torchrun processes see the real CPU while LOCALSSL_TEST_BF16 changes this process's.
REAL_PRECISION = f"train.precision={auto_precision(torch.device('cpu'))}"

# Two epochs of the 60 images of ``cifar_root`` in batches of 6 on CPU at width 1/16, in the precision the real CPU
# resolves to (the torchrun processes see the real CPU), lr raised so that the weights move.
SIXTY_IMAGES = [
    REAL_PRECISION,
    "model.width=0.0625",
    "train.batch_size=6",
    "train.epochs=2",
    "train.lr=1e-3",
    "train.device=cpu",
    "train.progress=false",
]

# The smallest run on CPU: VGG-6 at width 1/16, batches of 8, one epoch, no progress bar (add what a test needs).
TINY = ["model.width=0.0625", "train.batch_size=8", "train.device=cpu", "train.progress=false", "train.epochs=1"]


@pytest.fixture
def tiny_run(cifar_root: Path, tmp_path: Path) -> list[str]:
    """Overrides for a run of seconds on CPU: the smallest VGG-6, 2 steps of 8 images an epoch, the fake
    CIFAR-10 of ``cifar_root``, runs under ``tmp_path/runs``, a probe of one epoch on 3 held-out images."""
    return [
        *TINY,
        "train.max_steps_per_epoch=2",
        f"data.root={cifar_root}",
        f"out_dir={tmp_path / 'runs'}",
        "probe.epochs=1",
        "probe.val_size=3",
    ]


@pytest.fixture
def isolated_registries(monkeypatch, tmp_path_factory):
    """Registrations made by the test (user components, entry points, ``--import``-ed modules) are
    forgotten afterwards: the registries and the entry-point state are restored, and the user modules
    it imported (from temporary folders or ``examples/``) are unloaded."""
    from localssl import registry

    for reg in (registry.VIEWS, registry.OBJECTIVES, registry.RULES, registry.MODELS):
        reg.names()  # the built-ins first, then a copy that the test may change
        monkeypatch.setattr(reg, "_entries", dict(reg._entries))
    monkeypatch.setattr(registry, "_ENTRY_POINTS_LOADED", False)
    monkeypatch.setattr(registry, "_ENTRY_POINT_ERRORS", [])
    monkeypatch.setattr(registry, "_FILE_MODULES", {})
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield registry
    user_folders = (tmp_path_factory.getbasetemp().resolve(), Path(__file__).resolve().parents[1] / "examples")
    for name in set(sys.modules) - before:
        file = getattr(sys.modules[name], "__file__", None)
        if file and any(Path(file).resolve().is_relative_to(folder) for folder in user_folders):
            del sys.modules[name]


@pytest.fixture
def cifar_zip_root(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    root = tmp_path / "data"
    root.mkdir()
    with zipfile.ZipFile(root / "cifar10-jpeg.zip", "w") as zf:
        for split, n in (("train", 3), ("test", 2)):
            zf.writestr(f"{split}/", "")
            for cls in ("airplane", "automobile", "bird"):
                for k in range(n):
                    zf.writestr(
                        f"{split}/{cls}/{k:04d}.jpg", jpeg_bytes(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
                    )
    return root


# --- small MLPs and rules built by name (rule tests: DFA, predictive coding) ---


def mlp(widths: list[int], seed: int = 0, act: type[nn.Module] = nn.ReLU) -> LayeredEncoder:
    torch.manual_seed(seed)
    return LayeredEncoder([nn.Sequential(nn.Linear(a, b), act()) for a, b in itertools.pairwise(widths)])


def specs(widths: list[int]) -> list[LayerSpec]:
    return [LayerSpec(i, (w,)) for i, w in enumerate(widths[1:])]


def make_rule(name: str, objective: dict, layers: list[LayerSpec], **rule_kw):
    torch.manual_seed(1)  # same objective initialisation for every rule
    cfg = RULES.make_config({"name": name, **rule_kw})
    return RULES.get(name).builder(cfg, OBJECTIVES.make_config(objective), layers)


def labelled_views(n: int, d: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> ViewBatch:
    g = torch.Generator().manual_seed(seed)
    empty = torch.zeros(0, dtype=torch.long)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    labels = torch.randint(0, 3, (n,), generator=g)
    return ViewBatch(x=x, pos=empty, pos_ref=empty, neg=empty, neg_ref=empty, labels=labels, n_images=n)


def ring_task_accuracy(rule_name: str, train_hidden: bool, steps: int, **rule_kw) -> float:
    """Classes = rings of the first two of 10 input coordinates; a 10-16-16-8 ReLU MLP with a
    cross-entropy read-out trained by ``rule_name`` (Adam 1e-2, batches of 64). With the hidden layers
    frozen at random init the read-out stays near the majority rate: learning them is needed."""
    torch.manual_seed(0)
    x = torch.randn(2000, 10)
    r = x[:, :2].norm(dim=1)
    y = (r > 1.0).long() + (r > 1.8).long()
    widths = [10, 16, 16, 8]
    enc = mlp(widths)
    rule = make_rule(rule_name, {"name": "cross_entropy", "num_classes": 3}, specs(widths), **rule_kw)
    if not train_hidden:
        for p in enc.layers[:-1].parameters():
            p.requires_grad_(False)
    opt = torch.optim.Adam(list(rule.parameters_to_train(enc)), lr=1e-2)
    ctx = StepContext(optimizer=opt)  # used by rules that step the weights themselves (predictive coding)
    empty = torch.zeros(0, dtype=torch.long)
    for _ in range(steps):
        idx = torch.randint(0, 2000, (64,))
        opt.zero_grad()
        rule.step(enc, ViewBatch(x[idx], empty, empty, empty, empty, labels=y[idx], n_images=64), ctx)
        opt.step()
    with torch.no_grad():
        return (rule.objectives["3"].readout(enc(x)[-1]).argmax(1) == y).float().mean().item()


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A real single-node SLURM cluster on localhost (``tests/slurm_cluster.py``: munged, slurmctld and slurmd
    from a configuration of its own, 2 CPUs), started once for the session and stopped at its end (only the
    daemons it started). ``SLURM_CONF`` points at it and ``PYTHONPATH`` at this checkout, so that sbatch, squeue
    and the jobs find both. Skips in one line where it cannot start (not root, SLURM not installed)."""
    from slurm_cluster import LocalCluster, why_not

    pytest.importorskip("submitit", reason="submitit not installed (pip install 'localssl[slurm]')")
    reason = why_not()
    if reason:
        pytest.skip(reason)
    cluster = LocalCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except (RuntimeError, OSError, subprocess.CalledProcessError) as err:
        pytest.skip(f"the local SLURM cluster did not start: {str(err).splitlines()[0]}")
    saved = {k: os.environ.get(k) for k in ("SLURM_CONF", "PYTHONPATH")}
    os.environ["SLURM_CONF"] = str(cluster.conf)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), saved["PYTHONPATH"]) if p)
    try:
        yield cluster
    finally:
        cluster.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def audio_loss_before_after(preset: str, overrides: list[str], steps: int = 10, data=None) -> tuple[float, float]:
    """The summed per-layer loss of ``preset`` on 8 utterances (of ``data``, default synthetic speech) before and
    after ``steps`` Adam steps (same windows and negatives every time: the seed is reset before each evaluation)."""
    from localssl.build import build
    from localssl.config import load_config
    from localssl.data import load_split

    comp = build(load_config(preset, overrides))
    opt = torch.optim.Adam(list(comp.rule.parameters_to_train(comp.encoder)), lr=3e-3)
    data = data if data is not None else load_split("synthetic-speech", "test")

    def loss(train: bool) -> float:
        torch.manual_seed(0)
        opt.zero_grad()
        metrics = comp.rule.step(comp.encoder, comp.views(data.signals[:8], data.labels[:8]))
        if train:
            opt.step()
        return sum(float(v) for k, v in metrics.items() if k.startswith("loss"))

    before = loss(False)
    for _ in range(steps):
        loss(True)
    return before, loss(False)
