"""The CPU training process keeps freed memory for the next step (localssl.memory.keep_freed_heap).

Oracle: the kernel's own accounting of the process (``VmRSS`` in /proc/self/status). A 24 MiB block written
and freed is handed back to the kernel by glibc's defaults (an mmap'd block, or a trimmed heap top): the
resident set falls by about its size. With ``keep_freed_heap()`` the block comes from the heap and stays, so
the resident set does not fall, and the next step's block of the same size is served without new pages.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = r"""
import json, re, sys, torch
from localssl.memory import keep_freed_heap
def rss():
    return int(re.search(r"VmRSS:\s+(\d+)", open("/proc/self/status").read()).group(1)) // 1024
kept = keep_freed_heap() if sys.argv[1] == "keep" else False
torch.ones(8)  # torch's own start-up allocations
before = rss()
x = torch.ones(24 * 2**20 // 4)  # 24 MiB, every page written
during = rss()
del x
after = rss()
print(json.dumps({"kept": kept, "before": before, "during": during, "after": after}))
"""


def _run(mode: str, env: dict[str, str] | None = None) -> dict[str, int]:
    root = Path(__file__).resolve().parents[1]
    full_env = {**os.environ, "PYTHONPATH": str(root), **(env or {})}
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, env=full_env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _glibc() -> bool:
    try:
        ctypes.CDLL("libc.so.6").mallopt  # noqa: B018
        return Path("/proc/self/status").exists()
    except (OSError, AttributeError):
        return False


pytestmark = pytest.mark.skipif(not _glibc(), reason="glibc's mallopt and /proc/self/status are Linux/glibc only")


def test_freed_block_goes_back_to_the_kernel_by_default() -> None:
    r = _run("default")
    assert r["during"] - r["before"] >= 20  # the 24 MiB block was resident
    assert r["during"] - r["after"] >= 20  # and glibc returned it


def test_keep_freed_heap_keeps_the_block_resident() -> None:
    r = _run("keep")
    assert r["kept"] is True
    assert r["during"] - r["before"] >= 20
    assert r["during"] - r["after"] <= 2  # freed but still the process's: no page faults for the next step


def test_localssl_malloc_system_leaves_the_allocator_alone() -> None:
    r = _run("keep", {"LOCALSSL_MALLOC": "system"})
    assert r["kept"] is False
    assert r["during"] - r["after"] >= 20


def test_a_cpu_run_sets_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from localssl.config import load_config
    from localssl.train import run, trainer

    calls: list[int] = []
    monkeypatch.setattr(trainer, "keep_freed_heap", lambda: calls.append(1) or True)
    cfg = load_config(
        "clapp++",
        ["data.name=cifar10-mini", "data.train_subset=32", "train.batch_size=16", "train.epochs=1",
         "train.max_steps_per_epoch=1", "model.width=0.0625", "train.progress=false", "train.device=cpu"],
    )  # fmt: skip
    run.pretrain(cfg, run_dir=tmp_path / "run")
    assert calls == [1]
