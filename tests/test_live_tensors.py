"""``benchmarks/live_tensors.py``'s count of the storages a block creates: its peak is the bytes alive together,
storages that existed before (in-place and ``out=`` writes) do not count, and a freed storage leaves the count."""

import importlib.util
from pathlib import Path

import torch

SPEC = importlib.util.spec_from_file_location(
    "live_tensors", Path(__file__).resolve().parents[1] / "benchmarks" / "live_tensors.py"
)
live_tensors = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(live_tensors)


def test_the_peak_is_the_bytes_alive_together_and_old_storages_do_not_count():
    kept = torch.zeros(1024)  # 4 KiB that exist before the block
    mode = live_tensors.LiveStorages()
    with mode:
        a = torch.ones(256 * 1024)  # 1 MiB
        b = torch.ones(512 * 1024)  # 2 MiB: 3 MiB alive together
        kept.add_(1)  # in place: no new storage
        torch.mul(kept, 2, out=kept)  # out=: none either
        del a, b
        c = torch.ones(128 * 1024)  # 0.5 MiB after both were freed
    assert mode.peak == 3 * 2**20
    assert mode.now == 2**19 and c.numel() == 128 * 1024
    assert mode.at_peak[0][0] == 2**21 and mode.at_peak[0][2] == (512 * 1024,)
