"""The scales of ``localssl reproduce speedrun`` (:mod:`localssl.experiments.library.speedrun`): the steps one core (or
the whole machine, for the record) makes in a minute of each rule at each width, and each scale's protocol,
candidates, budgets and rules."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from localssl.registry import ConfigError

# Steps per minute of one core (fast path: bf16 autocast + channels_last on this CPU), measured on the
# reference machine (2-core AMD EPYC with AVX-512 bf16, torch 2.13.0) on 2026-12-06 with
# `localssl bench --suite speedrun-steps` (benchmarks/RESULTS.md, "speedrun steps per minute").
STEPS_PER_MINUTE: dict[tuple[str, float], int] = {
    ("clapp++", 0.125): 731,
    ("clapp++", 0.25): 268,
    ("bp-clapp++", 0.125): 917,
    ("bp-clapp++", 0.25): 343,
    ("clapp++both", 0.125): 665,
    ("clapp++both", 0.25): 246,
    ("clapp++nospatial", 0.125): 753,
    ("clapp++nospatial", 0.25): 307,
    ("clapp++dfb", 0.125): 741,
    ("clapp++dfb", 0.25): 318,
    ("bp-infonce", 0.125): 961,
    ("bp-infonce", 0.25): 326,
    ("scff", 0.125): 191,
    ("scff", 0.25): 79,
    ("lpl", 0.125): 22,
    ("lpl", 0.25): 8,
    ("ff", 0.125): 256,
    ("ff", 0.25): 97,
    ("phyll", 0.125): 829,
    ("phyll", 0.25): 313,
    ("vicreg", 0.125): 98,
    ("vicreg", 0.25): 33,
}

# Steps per minute of the whole reference machine (both cores: one run, two torch threads) for the record,
# measured on 2026-12-06 on CIFAR-10 itself: the first four 397-step epochs of a first start of the record took
# 46.7, 43.5, 45.6 and 45.3 s of training (its metrics.csv), 526 steps per minute; 512 leaves ~1.5 s of each
# minute for the checkpoint. `localssl bench --suite speedrun-steps --presets clapp++ --threads 2` reads 385-419
# (0.143-0.156 s/step, 40-400 timed steps): its random images train ~25 % slower than CIFAR-10's
# (benchmarks/RESULTS.md, "The 60-minute record").
RECORD_STEPS_PER_MINUTE: dict[tuple[str, float], int] = {("clapp++", 0.25): 512}


@dataclasses.dataclass(frozen=True)
class SpeedrunScale:
    protocol: str
    overrides: tuple[str, ...]  # applied to every run (before the candidate's width and learning rate)
    widths: tuple[float, ...]
    lr_factors: tuple[float, ...]  # × the preset's learning rate
    budgets: tuple[int, ...]  # minutes, ascending
    select_at: int  # the budget the candidates are compared at
    main: tuple[str, ...]  # rules run with --seeds seeds
    others: tuple[str, ...]  # rules run with one seed
    steps: Mapping[tuple[str, float], int] | None = None  # (rule, width) -> steps per minute; None: STEPS_PER_MINUTE
    fixed_steps: int | None = None  # the same steps per "minute" for every rule (the smoke scale)
    threads: int = 1  # torch threads per run: 1 (a "minute" is one core's) or the whole machine's (the record)
    unit: str = "minutes of one core"  # what a budget's minute is, for the report
    ship: tuple[tuple[str, str], ...] = ()  # (rule, name): its last budget's seed-0 run is shipped under name
    warmups: tuple[float, ...] = (0.0,)  # minutes of linear warm-up (train.warmup_epochs; cosine schedule only)
    # None: the candidates are the first `select_at` minutes of the budget chain (nested budgets, constant rate).
    # N: each candidate is its own run of N minutes (its schedule spans those N minutes), and the chosen recipe's
    # final runs start again from scratch: the choice of a recipe whose schedule depends on the run's length.
    choice_budget: int | None = None

    def __post_init__(self) -> None:
        if self.choice_budget is None and self.select_at not in self.budgets:
            raise ConfigError(f"speedrun scale: select_at={self.select_at} is not one of the budgets {self.budgets}")
        if self.choice_budget is not None and self.select_at != self.choice_budget:
            raise ConfigError("speedrun scale: with choice_budget, select_at is the choice runs' length")

    def candidates(self) -> list[tuple[float, float, float]]:
        """Every recipe compared at the selection budget: (width, lr factor, warm-up minutes)."""
        return [(w, f, u) for w in self.widths for f in self.lr_factors for u in self.warmups]

    @property
    def jobs(self) -> int:
        """Runs at once that fill the 2-core reference machine: two of one thread, or one of two."""
        return max(1, 2 // self.threads)

    def steps_per_minute(self, rule: str, width: float) -> int:
        if self.fixed_steps is not None:
            return self.fixed_steps
        table = STEPS_PER_MINUTE if self.steps is None else self.steps
        if (rule, width) not in table:
            raise ConfigError(
                f"speedrun: no steps-per-minute figure for {rule} at width {width}; measure it with "
                f"`localssl bench --suite speedrun-steps --presets {rule}` and add it to STEPS_PER_MINUTE"
            )
        return table[(rule, width)]

    def groups(self) -> list[tuple[str, ...]]:
        """The order the rules run in: the first two main rules, the other main rules, then the one-seed rules
        two at a time (so that a stopped speedrun has whole rows, and two workers stay busy)."""
        pairs = [self.others[i : i + 2] for i in range(0, len(self.others), 2)]
        return [g for g in (self.main[:2], self.main[2:], *pairs) if g]


def recipe(row: Mapping[str, Any]) -> tuple[float, float, float]:
    """A probed row's (width, lr factor, warm-up minutes); rows from before warm-ups were candidates had none."""
    return row["width"], row["lr_factor"], float(row.get("warmup_min") or 0.0)


def choice_rows(rows: list[Mapping[str, Any]], rule: str, sc: SpeedrunScale) -> list[Mapping[str, Any]]:
    """``rule``'s candidates at the selection budget (seed 0): the chain's rows there, or the choice runs'."""
    return [
        r
        for r in rows
        if r["rule"] == rule
        and r["seed"] == 0
        and r["budget_min"] == sc.select_at
        and r.get("horizon_min") == sc.choice_budget
    ]


PROBE = (
    "honest linear probe (`localssl probe`): 30 epochs of Adam 1e-3 on the z-scored pooled features of all six "
    "layers, 45 000 train images, the epoch with the best accuracy on 5000 held-out train images, the test split "
    "scored once"
)
SCALES: dict[str, SpeedrunScale] = {
    "smoke": SpeedrunScale(
        "pipeline check only, not a measurement: the CIFAR-10 subset shipped with localssl, 64 pretraining images, "
        "2 steps per 'minute', VGG-6 at width 1/16, budgets of 1 and 2 'minutes'; probe: 200 train / 100 validation "
        "images, 2 epochs.",
        (
            "data.name=cifar10-mini",
            "data.train_subset=64",
            "train.batch_size=32",
            "probe.epochs=2",
            "probe.train_subset=200",
            "probe.val_size=100",
        ),
        widths=(0.0625,),
        lr_factors=(1.0, 2.0),
        budgets=(1, 2),
        select_at=1,
        main=("clapp++", "bp-clapp++"),
        others=("scff",),
        fixed_steps=2,
    ),
    "cpu": SpeedrunScale(
        "full CIFAR-10 (50 000 train images, JPEG copy where the pickled batches are absent), each preset's "
        "optimizer and batch size, VGG-6 at the chosen width, the fast path; budgets of 1, 3 and 10 minutes of one "
        "core, as steps (`STEPS_PER_MINUTE`); candidates width 1/8 or 1/4 × the preset's learning rate × 1 or 2, "
        f"chosen on validation accuracy at 3 minutes (seed 0); {PROBE}. The 60-minute record of CLAPP++ on the "
        "whole machine is the `record` scale ([`../record/results.md`](../record/results.md)).",
        ("data.name=cifar10",),
        widths=(0.125, 0.25),
        lr_factors=(1.0, 2.0),
        budgets=(1, 3, 10),
        select_at=3,
        main=("clapp++", "bp-clapp++", "clapp++both"),
        others=("clapp++nospatial", "clapp++dfb", "bp-infonce", "scff", "lpl", "ff", "phyll", "vicreg"),
    ),
    "record": SpeedrunScale(
        "the 60-minute record: the best CLAPP++ in 60 minutes of the whole 2-core reference machine (one run, two "
        "torch threads), as steps (`RECORD_STEPS_PER_MINUTE`). Full CIFAR-10, VGG-6 at width 1/4 (the `cpu` "
        "scale's choice for `clapp++`) with the preset's AdamW and batch 32, a cosine decay of the learning rate "
        "to 0 over the run, the fast path. **The recipe is chosen first**, on validation accuracy only (the test "
        "split plays no part), among 4 candidates, each its own 15-minute run with the cosine decay over its 15 "
        "minutes: the preset's peak learning rate (2e-4) or twice it, with no warm-up or a 1-minute linear "
        "warm-up; the chosen recipe then trains once for 60 minutes from scratch. Random init of the same network "
        f"is probed beside it; {PROBE}.",
        ("data.name=cifar10", "train.schedule=cosine"),
        widths=(0.25,),
        lr_factors=(1.0, 2.0),
        warmups=(0.0, 1.0),
        budgets=(60,),
        select_at=15,
        choice_budget=15,
        main=("clapp++",),
        others=(),
        steps=RECORD_STEPS_PER_MINUTE,
        threads=2,
        unit="minutes of the whole 2-core machine",
        ship=(("clapp++", "clapp_pp_cifar10"),),
    ),
}
