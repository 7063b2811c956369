#!/usr/bin/env bash
# The first thing to run when a session has a GPU: everything below within DEVICE_CHECK_BUDGET seconds
# (default 540 = 9 min; dry run: 600, with the table stage cut at 20 s to exercise a cut-off run). Each stage is time-boxed (`timeout`) and appends to the results file as it goes,
# so a run cut off at any point keeps the numbers it has:
#   1. the device: name, memory, torch and CUDA versions;
#   2. a smoke test of every preset, 20 training steps each (`localssl bench --suite smoke`);
#   3. `localssl bench` of clapp++ (with its counterpart bp-clapp++) and clapp++nospatial at full width, on
#      CIFAR-10 (32 px) and STL-10-shaped (96 px) random images, fp32 and bf16: images/s, TFLOP/s, peak
#      memory, and epochs per hour of the paper's protocol (300 epochs: hours = 300 / epochs per hour);
#   4. `localssl reproduce table2 --scale gpu --jobs N` for the time that is left (less stage 5's reserve); the
#      cells that finished (its results.md, rewritten after every cell) are appended;
#   5. `localssl export` of a clapp++ run the table trained (if none finished: of a short clapp++ run on the
#      shipped CIFAR-10 subset, trained here), fp32 and bf16, into TABLE_OUT/export/: file sizes, export and load
#      times, and the loaded file's features on the device against the checkpoint's.
#
#   bash benchmarks/device_check.sh              # GPU machine: appends to benchmarks/RESULTS.md
#   bash benchmarks/device_check.sh --dry-run    # CPU, tiny sizes, writes a temporary file (tests/test_device_check.py)
#
# Environment: DEVICE_CHECK_DRY=1 (same as --dry-run), DEVICE_CHECK_OUT=FILE (results file),
# DEVICE_CHECK_BUDGET=SECONDS, DEVICE_CHECK_JOBS=N (table runs at once; default 4), PYTHON (interpreter),
# LOCALSSL_DATA (the folder holding CIFAR-10 for stage 4).
#
# Measures: on one GPU, whether every preset trains, the images/s, TFLOP/s and peak memory of clapp++ vs
# bp-clapp++ at full width, and how much of table2's `gpu` scale fits the budget. Latest number: none yet (no
# GPU has been lent to a session that ran it; benchmarks/RESULTS.md, "GPU readiness"); the dry run passes on
# CPU in tests/test_device_check.py.
set -u
cd "$(dirname "$0")/.."
DRY=${DEVICE_CHECK_DRY:-0}
[ "${1:-}" = "--dry-run" ] && DRY=1
PY=${PYTHON:-python}
START=$SECONDS

if [ "$DRY" = 1 ]; then
  OUT=${DEVICE_CHECK_OUT:-$(mktemp -d)/RESULTS.md}
  DEVICE=cpu BUDGET=${DEVICE_CHECK_BUDGET:-600} JOBS=${DEVICE_CHECK_JOBS:-2}
  SMOKE=(--presets clapp++ bp-clapp++ --steps 2 model.width=0.0625)
  BENCH=(model.width=0.0625 --rounds 1 --steps 1 --memory-repeats 0)
  BENCH_DATA="cifar10" BENCH_PRECISION="bf16" SCALE=smoke TABLE_OUT=$(dirname "$OUT")/table2
  export LOCALSSL_RUNS=$TABLE_OUT/runs  # the dry run never touches the user's run store
  SMOKE_T=300 BENCH_T=300 TABLE_T=20 MIN_T=5 EXPORT_T=150
  FALLBACK=(data.name=cifar10-mini data.train_subset=64 model.width=0.0625 train.batch_size=16 train.epochs=1)
else
  OUT=${DEVICE_CHECK_OUT:-benchmarks/RESULTS.md}
  DEVICE=cuda BUDGET=${DEVICE_CHECK_BUDGET:-540} JOBS=${DEVICE_CHECK_JOBS:-4}
  SMOKE=(--steps 20)
  BENCH=(--rounds 5 --steps 5)
  BENCH_DATA="cifar10 stl10" BENCH_PRECISION="fp32 bf16" SCALE=gpu TABLE_OUT=results/table2/gpu
  SMOKE_T=150 BENCH_T=45 TABLE_T=100000 MIN_T=20 EXPORT_T=90
  FALLBACK=(data.name=cifar10-mini train.epochs=1)
fi
TMP=$(mktemp -d)

left() { echo $((BUDGET - (SECONDS - START))); }
box() { # the smaller of a stage's own time box ($1) and what is left of the budget, less 10 s kept for the
  local l=$(($(left) - 10 - ${2:-0})) # notes and $2 s kept for the stages after it
  [ "$1" -lt "$l" ] && echo "$1" || echo "$l"
}
note() { printf '%s\n' "$*" >> "$OUT"; echo "$*"; }
ran() { # how a time-boxed command ended
  case "$1" in
    0) echo "done" ;;
    124 | 137) echo "**stopped at its $2 s time box**" ;;
    *) echo "**failed (exit $1)**" ;;
  esac
}

NAME=$($PY - "$DEVICE" <<'EOF'
import sys, torch
if sys.argv[1] == "cuda":
    if not torch.cuda.is_available():
        print("NO-CUDA")
    else:
        p = torch.cuda.get_device_properties(0)
        print(f"{p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}")
else:
    print(f"CPU dry run, torch {torch.__version__}")
EOF
)
if [ "$NAME" = "NO-CUDA" ]; then
  echo "device_check: torch sees no CUDA device; use --dry-run on a CPU machine" >&2
  exit 2
fi
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo "unknown commit")
mkdir -p "$(dirname "$OUT")"
[ -f "$OUT" ] || printf '# Benchmark results\n' > "$OUT"
note ""
note "## Device check — $(date -u +%F) — $NAME"
note ""
note "\`bash benchmarks/device_check.sh$([ "$DRY" = 1 ] && echo ' --dry-run')\` at commit $COMMIT, budget $BUDGET s; each stage time-boxed, rows appended as they came."

# ---------------------------------------------------------------- 2. smoke test of every preset
T=$(box $SMOKE_T)
if [ "$T" -lt "$MIN_T" ]; then
  note ""
  note "### Smoke test of every preset on $DEVICE"
  note ""
  note "Not run: the budget was spent."
else  # the suite writes its own heading and appends a row per preset as it finishes
  timeout -k 10 "$T" $PY -m localssl bench --suite smoke "train.device=$DEVICE" "${SMOKE[@]}" --results "$OUT" > /dev/null
  CODE=$?
  note ""
  note "Smoke stage: $(ran $CODE "$T")."
fi

# ---------------------------------------------------------------- 3. speed and memory
note ""
note "### \`localssl bench\` on $DEVICE"
for DATA in $BENCH_DATA; do
  for PREC in $BENCH_PRECISION; do
    for PRESET in clapp++ clapp++nospatial; do
      [ "$DRY" = 1 ] && [ "$PRESET" = clapp++nospatial ] && continue
      VS=() && [ "$PRESET" = clapp++nospatial ] && VS=(--vs none)
      T=$(box $BENCH_T)
      [ "$T" -lt "$MIN_T" ] && note "" && note "- $PRESET $DATA $PREC: not run (the budget was spent)" && continue
      rm -f "$TMP/bench.md" "$TMP/bench.json"
      timeout -k 10 "$T" $PY -m localssl bench "$PRESET" "train.device=$DEVICE" "data.name=$DATA" \
        "train.precision=$PREC" "${BENCH[@]}" "${VS[@]}" --out "$TMP/bench.json" --results "$TMP/bench.md" \
        > /dev/null 2> "$TMP/bench.err"
      CODE=$?
      if [ -f "$TMP/bench.md" ]; then
        sed -n '/^### /,$p' "$TMP/bench.md" >> "$OUT"
        $PY - "$TMP/bench.json" >> "$OUT" <<'EOF'
import json, sys
out = json.load(open(sys.argv[1]))
sizes = {"cifar10": 50_000, "stl10": 105_000}
n = sizes.get(out["setup"]["dataset"])
for label, row in out["presets"].items():
    if n and row.get("train_images_per_s"):
        per_hour = row["train_images_per_s"] * 3600 / n
        print(f"{label}: {per_hour:.1f} epochs/hour of the paper's protocol (views + step; "
              f"300 epochs = {300 / per_hour:.1f} h).  ")
EOF
      else
        note "" && note "- $PRESET $DATA $PREC: $(ran $CODE "$T"); $(tail -1 "$TMP/bench.err")"
      fi
    done
  done
done

# ---------------------------------------------------------------- 4. table2 at the gpu scale
T=$(box $TABLE_T $EXPORT_T)
note ""
note "### \`localssl reproduce table2 --scale $SCALE --jobs $JOBS\` ($T s left of the budget)"
note ""
if [ "$T" -lt "$MIN_T" ]; then
  note "Not run: the budget was spent."
else
  timeout -k 10 "$T" $PY -m localssl reproduce table2 --scale "$SCALE" --jobs "$JOBS" --out "$TABLE_OUT" \
    > /dev/null 2> "$TMP/table.err"
  CODE=$?
  note "Table stage: $(ran $CODE "$T"); the cells that finished (runs in \`$TABLE_OUT\`):"
  note ""
  if [ -f "$TABLE_OUT/results.md" ]; then
    sed -e 's/^#\{1,3\} /#### /' "$TABLE_OUT/results.md" >> "$OUT"
  else
    note "No cell finished. Last lines of its log:"
    note ""
    tail -3 "$TMP/table.err" | sed 's/^/    /' >> "$OUT"
  fi
fi

# ---------------------------------------------------------------- 5. export the encoder it trained
RUNS=${LOCALSSL_RUNS:-$TABLE_OUT/runs}
T=$(box $EXPORT_T)
note ""
note "### \`localssl export\` of the clapp++ run it trained"
note ""
if [ "$T" -lt "$MIN_T" ]; then
  note "Not run: the budget was spent."
else
  RUN=""
  for D in "$RUNS"/clapp++-*; do
    [ -f "$D/summary.json" ] && [ -f "$D/checkpoint.pt" ] && RUN=$D && break
  done
  if [ -z "$RUN" ]; then
    note "No clapp++ run of the table finished; a short one on the shipped CIFAR-10 subset is trained to export it."
    STARTED=$SECONDS
    RUN=$(timeout -k 10 "$T" $PY -m localssl pretrain clapp++ "${FALLBACK[@]}" "train.device=$DEVICE" \
      train.progress=false "out_dir=$TMP/export-runs" 2> "$TMP/export.err" | tail -1)
    T=$((T - (SECONDS - STARTED)))
  fi
  if [ -z "$RUN" ] || [ "$T" -lt "$MIN_T" ]; then
    note "Export stage: **not run**: no run to export, or no time left ($(tail -1 "$TMP/export.err" 2>/dev/null))."
  else
    PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" timeout -k 10 "$T" $PY benchmarks/export_roundtrip.py "$RUN" \
      "$TABLE_OUT/export" "$DEVICE" >> "$OUT" \
      2> "$TMP/export.err"
    CODE=$?
    note ""
    note "Export stage: $(ran $CODE "$T")$([ $CODE = 0 ] || echo "; $(tail -1 "$TMP/export.err")")."
  fi
fi
note ""
note "Device check finished in $((SECONDS - START)) s."
echo "results: $OUT"
rm -rf "$TMP"
