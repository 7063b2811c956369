#!/usr/bin/env bash
# Does the eSpeak NG speech task leave room above its baselines (issue 39)? The `cpu` scale's supervised rows are
# too short to say (1280 steps on 0.6 h), so this trains the two supervised references longer on a larger corpus
# made by the same generator, and probes them beside random init and 13 MFCCs on the same corpus:
#   phones:   supervised-audio (frame cross-entropy)      against random-audio and mfcc-audio
#   speakers: supervised-speaker-audio (window read-out)   against random-audio (and mfcc-audio, for reference)
# GIM's audio encoder at width 1/4, 6400-sample windows, batch 8, every training utterance, 20 epochs with a cosine
# decay (Adam 2e-3 for phones, 5e-4 for speakers: the `cpu` scale's rates), one torch thread per run, two runs at
# once; probes as at the `cpu` scale (phones: 20 epochs on 300 utterances; speakers: 400 epochs on all the others;
# 100 held-out training utterances choose the epoch, the test split is read once).
#
#   bash benchmarks/speech_room.sh OUT [SEED ...]     # default seed 0; ROOM_HOURS (3), ROOM_EPOCHS (20)
#
# Writes OUT/data (the corpus: `localssl data make espeak-gpu --hours ROOM_HOURS`), OUT/runs and OUT/room.tsv
# (task, preset, seed, test %, validation %, run: every probed run under OUT/runs), then prints the differences
# the issue asks for (>= 15 points).
# Measured: benchmarks/RESULTS.md, "does the task leave room at a longer budget" (2026-12-07, seeds 0 and 1: phones
# supervised 58.6 % against MFCC 40.5 and random init 19.7; speakers 52.7 against random init 15.8; 10 800 steps,
# about 22 minutes per supervised run on one core of the AVX2 machine).
set -euo pipefail
OUT=${1:?usage: bash benchmarks/speech_room.sh OUT [SEED ...]}
shift
SEEDS=("${@:-0}")
HOURS=${ROOM_HOURS:-3}
EPOCHS=${ROOM_EPOCHS:-20}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export OMP_NUM_THREADS=1
[ -f "$OUT/data/espeak-gpu/manifest.json" ] || localssl data make espeak-gpu --root "$OUT/data" --hours "$HOURS" >&2

BASE=("out_dir=$OUT/runs" data.name=espeak-gpu "data.root=$OUT/data" views.window=6400 train.progress=false model.width=0.25
  data.train_subset=null probe.lr=1e-2 probe.val_size=100)
PHONES=(probe.epochs=20 probe.train_subset=300)
SPEAKERS=(probe.target=speaker probe.epochs=400 probe.train_subset=null probe.batch_size=64)
TRAIN=(train.schedule=cosine "train.epochs=$EPOCHS")

one() { # task preset seed overrides...: a run, then its probe (the settings stored in its config)
  local task=$1 preset=$2 seed=$3
  shift 3
  local run
  run=$(localssl pretrain "$preset" "${BASE[@]}" "train.seed=$seed" "$@" 2>>"$OUT/$task-$preset-$seed.log" | tail -1)
  localssl probe "$run" >/dev/null 2>>"$OUT/$task-$preset-$seed.log"
}

for seed in "${SEEDS[@]}"; do
  one phones supervised-audio "$seed" "${PHONES[@]}" "${TRAIN[@]}" train.lr=2e-3 probe.layers=6 &
  one speakers supervised-speaker-audio "$seed" "${SPEAKERS[@]}" "${TRAIN[@]}" train.lr=5e-4 probe.layers=6 &
  wait
  one phones random-audio "$seed" "${PHONES[@]}" probe.layers=6 &
  one speakers random-audio "$seed" "${SPEAKERS[@]}" probe.layers=6 &
  wait
done
# MFCCs have no weights and their probe does not follow train.seed: one probe per task, not one per seed
one phones mfcc-audio "${SEEDS[0]}" "${PHONES[@]}" &
one speakers mfcc-audio "${SEEDS[0]}" "${SPEAKERS[@]}" &
wait
python - "$OUT" <<'EOF'
import collections, json, statistics, sys
from pathlib import Path

import yaml

out = Path(sys.argv[1])
acc = collections.defaultdict(list)
with open(out / "room.tsv", "w") as tsv:
    for probe in sorted(out.glob("runs/*/probe.json")):
        cfg = yaml.safe_load((probe.parent / "config.yaml").read_text())
        task = "speakers" if cfg["probe"].get("target") == "speaker" else "phones"
        d = json.loads(probe.read_text())
        row = (task, cfg["name"], str(cfg["train"]["seed"]), f"{d['test_acc_pct']:.2f}", f"{d['val_acc_pct']:.2f}")
        tsv.write("\t".join([*row, str(probe.parent)]) + "\n")
        acc[task, cfg["name"]].append(d["test_acc_pct"])
mean = {k: statistics.mean(v) for k, v in acc.items()}
print("task      preset                     runs  test % (mean; each run)")
for (task, preset), v in sorted(acc.items()):
    print(f"{task:9s} {preset:26s} {len(v):4d}  {mean[task, preset]:.2f}  ({', '.join(f'{x:.2f}' for x in v)})")
for task, top, floor in (
    ("phones", "supervised-audio", "mfcc-audio"),
    ("phones", "supervised-audio", "random-audio"),
    ("speakers", "supervised-speaker-audio", "random-audio"),
):
    gap = mean[task, top] - mean[task, floor]
    print(f"{task}: {top} - {floor} = {gap:+.1f} points (>= 15 asked): {'yes' if gap >= 15 else 'no'}")
EOF
