"""The ``pipeline-model`` suite: :mod:`localssl.train.pipeline_cost` checked against a K=2 CPU measurement, then
its predictions for K = 2, 4, 6 on H100-class GPUs (NVLink in one node, InfiniBand across nodes).

    localssl bench --suite pipeline-model model.width=1.0 from=LAYER_PARALLEL.json setting=1.0x32:16

``from``/``setting``: the ``layer-parallel`` suite's ``--out`` JSON and the setting to check against (its (a)
calibrates the CPU's FLOP rate, its (d) and (c) are the measurements the K=2 predictions are checked against);
or give ``calibrate=IMG_PER_S check=IMG_PER_S [check_dp=IMG_PER_S] n_batches=N`` by hand. Other ``key=value``
go to the preset (``clapp++``, or ``preset=NAME``), whose layers are profiled on one batch here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch.utils.flop_counter import FlopCounterMode

from localssl.bench import Runner, Spec
from localssl.bench_suites import Options, heading, suite
from localssl.train import pipeline_cost as pc

# Assumptions, stated in the report: effective rates, not peaks.
H100 = pc.Device(
    "H100 SXM (bf16, 30 % of the 989 TFLOP/s dense peak; HBM 80 % of 3.35 TB/s)", 0.30 * 989e12, 0.8 * 3.35e12
)
NVLINK = pc.Link("NVLink 4 in one node (80 % of 450 GB/s per direction, 10 µs)", 0.8 * 450e9, 10e-6)
INFINIBAND = pc.Link("InfiniBand NDR across nodes (80 % of 400 Gb/s per GPU, 10 µs)", 0.8 * 50e9, 10e-6)
CPU_LINK = pc.Link("gloo on localhost (assumed 2 GB/s, 100 µs)", 2e9, 100e-6)
CIFAR_STEPS = 50_000 // 32  # batches in a CIFAR-10 epoch at batch 32: the N of the GPU predictions


@suite("pipeline-model", "cost model of the layer pipeline vs data-parallel: K=2 CPU check, H100 predictions", None)
def pipeline_model(opts: Options) -> dict[str, Any]:
    keys = ("from", "setting", "calibrate", "check", "check_dp", "n_batches", "preset")
    given = {o.split("=", 1)[0]: o.split("=", 1)[1] for o in opts.overrides if o.split("=", 1)[0] in keys}
    overrides = [o for o in opts.overrides if o.split("=", 1)[0] not in keys]
    preset = given.get("preset", "clapp++")
    bounds = None
    if "from" in given:
        rows = json.loads(Path(given["from"]).read_text())["settings"][given["setting"]]
        given.setdefault("calibrate", rows["a"]["images_per_s"])
        given.setdefault("check", rows["d"]["images_per_s"])
        if "c" in rows:
            given.setdefault("check_dp", rows["c"]["images_per_s"])
        given.setdefault("n_batches", given["setting"].split(":")[1])
        stages = rows["d"]["runs"][0].get("stages")
        bounds = [int(s.split("-")[1]) for s in stages[:-1]] if stages else None
    layers, batch = profile_layers(preset, overrides)
    text = heading(opts, f"pipeline cost model, {preset} {' '.join(overrides)}")
    text += "| layer | GFLOP/batch | output MiB | parameters MiB |\n| ---: | ---: | ---: | ---: |\n"
    for i, lc in enumerate(layers):
        text += f"| {i + 1} | {lc.flops / 1e9:.2f} | {lc.out_bytes / 2**20:.2f} | {lc.param_bytes / 2**20:.1f} |\n"
    out: dict[str, Any] = {"layers": [vars(lc) for lc in layers], "batch": batch}
    if "calibrate" in given:
        rate = pc.calibrate_rate(layers, batch, float(given["calibrate"]))
        cpu = pc.Device(f"this CPU core, calibrated on (a): {rate / 1e9:.1f} GFLOP/s", rate)
        n = int(given.get("n_batches", 16))
        p2 = pc.pipeline(layers, batch, 2, cpu, CPU_LINK, n, bounds)
        d2 = pc.data_parallel(layers, batch, 2, cpu, CPU_LINK)
        text += f"\nK=2 on this CPU ({cpu.name}; {CPU_LINK.name}; N={n} batches, stage bounds {p2['bounds']}):\n\n"
        text += "| | predicted img/s | measured img/s | predicted / measured |\n| --- | ---: | ---: | ---: |\n"
        for name, pred, key in (("layer pipeline (d)", p2, "check"), ("data-parallel (c)", d2, "check_dp")):
            meas = float(given[key]) if key in given else None
            ratio = f"{pred['images_per_s'] / meas:.2f}" if meas else "–"
            text += f"| {name} | {pred['images_per_s']:.2f} | {meas if meas else '–'} | {ratio} |\n"
        out["cpu"] = {"rate": rate, "pipeline": p2, "data_parallel": d2, "measured": {k: given.get(k) for k in keys}}
    text += (
        f"\nPredictions (not measurements) on {H100.name}, global batch {batch}, N={CIFAR_STEPS} batches "
        "per epoch; speed-up over one GPU:\n\n"
        "| link | K | pipeline img/s | bubble | pipeline × | stage bounds | data-parallel img/s | data-parallel × |\n"
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |\n"
    )
    out["gpu"] = []
    for link in (NVLINK, INFINIBAND):
        for k in (2, 4, 6):
            p = pc.pipeline(layers, batch, k, H100, link, CIFAR_STEPS)
            d = pc.data_parallel(layers, batch, k, H100, link)
            text += (
                f"| {link.name.split(' (')[0]} | {k} | {p['images_per_s']:.0f} | {p['bubble']:.4f} | "
                f"{p['speedup']:.2f} | {p['bounds']} | {d['images_per_s']:.0f} | {d['speedup']:.2f} |\n"
            )
            out["gpu"].append({"link": link.name, "K": k, "pipeline": p, "data_parallel": d})
    one = batch / sum(pc.layer_times(layers, H100))
    text += f"\nOne H100 (predicted): {one:.0f} img/s. Links: {NVLINK.name}; {INFINIBAND.name}.\n"
    opts.emit(text)
    return out


def profile_layers(preset: str, overrides: Sequence[str]) -> tuple[list[pc.LayerCost], int]:
    """Per-layer FLOPs (one batch, counted), output bytes (at the run's precision) and parameter bytes of
    ``preset``, block by block as a stage runs it (``rule.step_layers``), on random images; and the batch."""
    r = Runner(Spec(preset, preset), list(overrides))
    tr = r.trainer
    rule, enc = tr.comp.rule, tr.comp.encoder
    vb = r.views()
    x, out = vb.x, []
    for i in range(len(enc.layers)):
        tr.opt.begin_step()
        with FlopCounterMode(display=False) as fc:
            x, _ = rule.step_layers(enc, x, vb, tr.step_context, range(i, i + 1))
        tr.opt.finish_step()
        pbytes = sum(p.numel() * 4 for p in tr.groups[i])
        out.append(pc.LayerCost(float(fc.get_total_flops()), float(x.numel() * x.element_size()), float(pbytes)))
    return out, r.batch_size
