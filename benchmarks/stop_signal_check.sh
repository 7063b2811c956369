#!/usr/bin/env bash
# A real SIGTERM, sent from outside 15 s after the start, to a one-process run, to a data-parallel torchrun run
# and to a layer-parallel one (2 processes, one thread each): the run stops with a checkpoint, --resume
# finishes it, and its weights are compared with the same run uninterrupted. About 6 minutes on 2 CPU cores.
#   bash benchmarks/stop_signal_check.sh        (CIFAR-10 under $LOCALSSL_DATA or ./data; work in a temp dir)
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
cd "$WORK" || exit 1
export OMP_NUM_THREADS=1 PYTHONPATH="$REPO"
export LOCALSSL_DATA="${LOCALSSL_DATA:-$REPO/data}"
COMMON="clapp++ model.width=0.25 train.batch_size=32 train.epochs=2 data.train_subset=6400 train.progress=false train.log_every=10"
for mode in one dp layers; do
  case $mode in
    one) L=(python -m localssl); X="";;
    dp) L=(python -m torch.distributed.run --nproc_per_node=2 --master_port=29611 -m localssl); X="";;
    layers) L=(python -m torch.distributed.run --nproc_per_node=2 --master_port=29612 -m localssl); X="train.parallel=layers";;
  esac
  "${L[@]}" pretrain $COMMON $X out_dir=runs-$mode-full > $mode-full.log 2>&1 || { echo "$mode: the uninterrupted run failed"; exit 1; }
  t0=$(date +%s.%N)
  "${L[@]}" pretrain $COMMON $X out_dir=runs-$mode-stop > $mode-stop.log 2>&1 &
  pid=$!
  sleep 15
  kill -TERM $pid
  wait $pid
  rc=$?
  echo "$mode: exit $rc, $(python -c "import time; print(round(time.time() - $t0, 1))") s after the start"
  grep -h "^localssl: stopped" $mode-stop.log | sort -u
  run=$(ls -d runs-$mode-stop/*)
  "${L[@]}" pretrain --resume "$run" > $mode-resume.log 2>&1 || { echo "$mode: the resume failed"; exit 1; }
  python - runs-$mode-full/* "$run" <<'PY'
import sys
import torch
full, resumed = (torch.load(f"{d}/checkpoint.pt", weights_only=True) for d in sys.argv[1:])
same = all(torch.equal(full[k][n], resumed[k][n]) for k in ("encoder", "rule") for n in full[k])
print(f"  resumed to global step {resumed['global_step']} (uninterrupted: {full['global_step']}); weights equal: {same}")
PY
done
rm -rf "$WORK"
