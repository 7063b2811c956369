"""``localssl bench --suite roofline``: the peaks, one preset's row and its arithmetic, and its failures.

Tiny shapes throughout (a 64³ matrix product, an 8-channel convolution, VGG-6 at width 1/16, batch 4): the
suite's arithmetic and failure modes, not this machine's speed."""

from __future__ import annotations

import re

import pytest
import torch

from localssl.bench_suites import roofline as rl

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ("model.width=0.0625", "train.batch_size=4", "train.device=cpu", "data.name=cifar10")
SMALL = {"matmul_n": 64, "conv": (2, 8, 8)}


def test_a_row_is_its_flop_over_its_time_over_its_peak():
    r = rl.roofline_row(("clapp++", 0.0625), TINY, rounds=2, steps=1, warmup=1, **SMALL)
    assert "error" not in r, r
    assert r["clock"] == "cpu" and r["threads"] == 1 and len(r["seconds_rounds"]) == 2
    assert r["seconds_per_step"] == pytest.approx(sum(r["seconds_rounds"]) / 2)  # the median of two
    assert r["peak"]["peak"] == max(r["peak"]["matmul"], r["peak"]["conv"]) > 0
    expected = r["gflop_per_step"] / r["seconds_per_step"] / r["peak"]["peak"]
    assert r["fraction_of_peak"] == pytest.approx(expected)
    assert r["gflop_per_s"] == pytest.approx(r["gflop_per_step"] / r["seconds_per_step"])
    shares = [s for _, s in r["top_operators"]]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1 + 1e-9
    # the table's row carries the same numbers, rounded
    cells = [c.strip() for c in rl.format_row(r).strip("|").split("|")]
    gflop, ms, rate, peak, frac = (float(c) for c in cells[2:7])
    assert frac == pytest.approx(gflop / (ms / 1e3) / peak, rel=0.05, abs=0.01)
    assert rate == pytest.approx(gflop / (ms / 1e3), rel=0.05, abs=0.1)
    assert re.search(r"`aten::\w+` \d+ %", cells[7])


def test_peaks_cover_every_precision_thread_count_and_encoder_shape():
    runner = rl.Runner(rl.Spec("clapp++", "clapp++"), list(TINY))
    shapes = rl.encoder_convs(runner)
    assert len(shapes) == 6 and shapes[0][0][:2] == (8, 3)  # two views of 4 images, RGB into VGG-6's first layer
    rows = rl.measure_peaks(torch.device("cpu"), ["bf16", "fp32"], [1, 2], shapes[:2], **SMALL, reps=1)
    assert torch.get_num_threads() == 1  # restored
    assert len(rows) == 2 * 2 * (2 + 2)
    assert {(r["precision"], r["threads"]) for r in rows} == {(p, n) for p in ("bf16", "fp32") for n in (1, 2)}
    assert all(r["gflop_per_s"] > 0 for r in rows)


def test_it_fails_sensibly():
    bad = rl.roofline_row(("no-such-preset", 0.0625), TINY, rounds=1, steps=1, warmup=1, **SMALL)
    assert bad["error"].startswith("ConfigError") and "no-such-preset" in bad["error"]
    assert "failed: ConfigError" in rl.format_row(bad)
    for args in ((0.0, 1.0, 1.0), (1.0, 0.0, 1.0), (1.0, 1.0, 0.0)):
        with pytest.raises(ValueError, match="positive"):
            rl.fraction_of_peak(*args)
    with pytest.raises(ValueError, match="cannot rate"):
        rl.op_rate(lambda: torch.zeros(3) + 1, torch.device("cpu"))  # no counted FLOP


@pytest.mark.slow
def test_a_compiled_step_is_refused_not_miscounted():
    """A compiled step hides its FLOP from the counter: its row says so (slow: inductor compiles first, ~45 s)."""
    compiled = rl.roofline_row(("clapp++", 0.0625), (*TINY, "train.compile=true"), 1, 1, 1, **SMALL)
    assert "not counted" in compiled["error"]
