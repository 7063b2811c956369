"""The cost model's equations in closed-form cases (localssl/train/pipeline_cost.py)."""

import math

import pytest

from localssl.train import pipeline_cost as pc

DEV = pc.Device("unit", flops_per_s=1e9)  # 1 GFLOP/s, optimizer folded in (M = inf)
FREE = pc.Link("free", bytes_per_s=math.inf)


def layers(*gflops, out_bytes=0.0, param_bytes=0.0):
    return [pc.LayerCost(g * 1e9, out_bytes, param_bytes) for g in gflops]


def test_bubble():
    assert pc.bubble(1, 10) == 0
    assert pc.bubble(2, 1) == pytest.approx(0.5)
    assert pc.bubble(4, 13) == pytest.approx(3 / 16)


def test_balanced_pipeline_without_links_is_k_times_faster_less_the_bubble():
    ls = layers(1, 1, 1, 1)  # 4 s per batch on one process
    p = pc.pipeline(ls, batch=8, n_stages=2, dev=DEV, link=FREE, n_batches=9)
    assert p["bounds"] == [2]
    assert p["stage_s"] == pytest.approx([2.0, 2.0])
    # N·B / ((N + K − 1)·T) = 9·8 / (10·2)
    assert p["images_per_s"] == pytest.approx(72 / 20)
    assert p["speedup"] == pytest.approx(2 * (1 - p["bubble"]))


def test_slowest_stage_sets_the_pace_and_links_add_transfer_time():
    ls = layers(3, 1, out_bytes=2e9)  # the cut sends 2 GB
    link = pc.Link("1 GB/s", 1e9, latency_s=0.5)
    ts = pc.stage_times(ls, [1], DEV, link)
    assert ts == pytest.approx([3 + 2 + 0.5, 1 + 2 + 0.5])
    p = pc.pipeline(ls, batch=1, n_stages=2, dev=DEV, link=link, n_batches=1, bounds=[1])
    assert p["images_per_s"] == pytest.approx(1 / (2 * 5.5))


def test_data_parallel_halves_compute_and_pays_the_ring_allreduce():
    ls = layers(2, 2, param_bytes=1e9)  # 2 GB of gradients
    link = pc.Link("1 GB/s", 1e9, latency_s=0.25)
    d = pc.data_parallel(ls, batch=4, n_procs=2, dev=DEV, link=link)
    # compute 4/2 s, all-reduce 2(K−1)/K·2 GB / 1 GB/s + 2(K−1)α = 2 + 0.5
    assert d["allreduce_s"] == pytest.approx(2.5)
    assert d["images_per_s"] == pytest.approx(4 / 4.5)
    assert pc.data_parallel(ls, 4, 1, DEV, link)["images_per_s"] == pytest.approx(1.0)


def test_optimizer_term_and_calibration():
    dev = pc.Device("hbm", flops_per_s=1e9, mem_bytes_per_s=7e9)  # 7 bytes moved per parameter byte
    ls = layers(1, param_bytes=1e9)
    assert pc.layer_times(ls, dev) == pytest.approx([2.0])
    d = pc.data_parallel(ls + ls, batch=2, n_procs=2, dev=dev, link=FREE)
    assert d["step_s"] == pytest.approx(1 + 2)  # compute split over 2, the optimizer of all 2 GB on each
    assert pc.calibrate_rate(layers(3, 1), batch=8, images_per_s=4) == pytest.approx(2e9)


def test_epoch_peak_reads_the_epochs_own_high_water_mark():
    from localssl.train.stages import EpochPeak

    peak = EpochPeak()
    big = b"\x01" * (64 * 2**20)  # written: resident
    del big
    peak.start()
    peak.stop()
    run = peak.run_peak_mb()
    assert run >= 64
    if peak.epoch_mb is not None:  # Linux with /proc: the reset dropped the 64 MiB that came before
        assert peak.epoch_mb <= run
