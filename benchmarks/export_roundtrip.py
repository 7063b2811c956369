"""Export a run's encoder (fp32 and bf16) and load it back: file sizes, export and load times, and the loaded
file's features against the run's checkpoint on a device (issue 40's round trip, at any size).

    python benchmarks/export_roundtrip.py RUN_DIR OUT_DIR [DEVICE] [N_IMAGES]

Prints one Markdown list item (``benchmarks/device_check.sh`` appends it to its results; benchmarks/RESULTS.md,
"Exported encoders"). The oracle is the run's checkpoint loaded into the same network and read out by the same
``localssl.features``; the exported files go to OUT_DIR (with their model cards)."""

from __future__ import annotations

import sys
import time

import torch

from localssl.checkpoint import load_latest
from localssl.config import read_run_config
from localssl.data import data_info, load_split
from localssl.evaluate.export import export_run
from localssl.evaluate.pretrained import features, load_encoder


def main(run: str, out: str, device: str = "cpu", n_images: int = 256) -> str:
    t0 = time.perf_counter()
    done = export_run(run, out_dir=out)
    export_s = time.perf_counter() - t0
    half = export_run(run, out_dir=out, dtype="bf16")
    t0 = time.perf_counter()
    encoder = load_encoder(done.path)  # the hash checked, safetensors parsed, no pickle
    load_s = time.perf_counter() - t0
    cfg = read_run_config(run)
    info = data_info(cfg.data)
    images = load_split(cfg.data.name, info.test_split, cfg.data.root, info).images[:n_images]
    ref = load_encoder(done.path)
    ref.load_state_dict(load_latest(run)[0]["encoder"])  # the oracle: the run's checkpoint in the same network
    want = features(ref.to(device), images)
    got = features(encoder.to(device), images)
    got_bf16 = features(load_encoder(half.path).to(device), images)
    diff = (got - want).abs().max().item()
    rel = ((got_bf16 - want).norm() / want.norm()).item()
    params = sum(p.numel() for p in encoder.parameters())
    return (
        f"- `{run}` ({cfg.name}, width {cfg.model.width}, {params:,} parameters, global step "
        f"{encoder.exported.info['global_step']}): `{done.path.name}` fp32 {done.bytes:,} bytes, exported in "
        f"{export_s:.2f} s; bf16 {half.bytes:,} bytes; loaded (sha256 checked) in {load_s:.3f} s. Features of "
        f"{len(images)} test images on {device}: max |Δ| = {diff:.3g} against the checkpoint's "
        f"({'bitwise equal' if torch.equal(got, want) else 'not bitwise equal'}); bf16 file: relative error {rel:.2e}."
    )


if __name__ == "__main__":
    args = sys.argv[1:]
    print("\n" + main(args[0], args[1], *(args[2:3] or ["cpu"]), *[int(a) for a in args[3:4]]))
