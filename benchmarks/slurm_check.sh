#!/usr/bin/env bash
# The SLURM launcher on a real (local, single-node, 2-CPU) SLURM cluster, as root (benchmarks/RESULTS.md):
#  1. `localssl reproduce table2 --scale smoke --launcher slurm`, then `--status` while the array runs, then the
#     same command again after the jobs end (the report);
#  2. `localssl pretrain --launcher slurm` over 2 tasks (data-parallel, gloo), `scancel --signal=USR2` mid-epoch
#     (what SLURM sends ahead of a time limit): the job checkpoints, requeues itself and finishes; its weights
#     are compared with the same run uninterrupted under torchrun;
#  3. (`bash benchmarks/slurm_check.sh study`, alone) a study that is no table: `localssl reproduce rhm --scale
#     smoke --launcher slurm` (its cells as one array, waited for), `--status` from another shell while it waits,
#     then the report it writes.
# Starts its own cluster (tests/slurm_cluster.py) unless SLURM_CONF is set; about 8 minutes on 2 CPU cores.
#   bash benchmarks/slurm_check.sh          (bash benchmarks/slurm_check.sh run: part 2 only;
#                                            EXTRA=train.parallel=layers bash benchmarks/slurm_check.sh run: 2 stages)
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
cd "$WORK" || exit 1
export OMP_NUM_THREADS=1 PYTHONPATH="$REPO"
if [ -z "${SLURM_CONF:-}" ]; then
  eval "$(python "$REPO/tests/slurm_cluster.py" start "$WORK/cluster")" || exit 1
  trap 'python "$REPO/tests/slurm_cluster.py" stop "$WORK/cluster"; rm -rf "$WORK"' EXIT
fi
run() { echo "\$ $*"; "$@" 2>&1 | sed "s|$WORK/||g"; }

if [ "${1:-}" = study ]; then
  echo "== 3. a study that is no table: its cells as one array, waited for"
  run localssl reproduce rhm --scale smoke --launcher slurm --out rhm > submit.txt &
  sleep "${STATUS_AFTER:-40}"
  run localssl reproduce rhm --scale smoke --status --out rhm
  wait
  grep -v "^rhm: \|^|\|^#\|^$" submit.txt   # the command's own lines (its per-run progress and report left out)
  echo "(the report it wrote, rhm/results.md:)"
  sed -n '1,40p' rhm/results.md
  run localssl reproduce rhm --scale smoke --status --out rhm
  exit 0
fi

if [ "${1:-}" != run ]; then
echo "== 1. a grid as a job array"
run localssl reproduce table2 --scale smoke --launcher slurm --out t2
sleep 45
run localssl reproduce table2 --scale smoke --status --out t2
while squeue -h | grep -q .; do sleep 5; done
run localssl reproduce table2 --scale smoke --launcher slurm --out t2
sed -n '/^| Method/,/^$/p' t2/results.md
fi

echo "== 2. one run over 2 tasks, stopped by the scheduler"
COMMON=(clapp++ data.name=cifar10-mini data.train_subset=1024 model.width=0.125 train.batch_size=16 train.epochs=2
  train.log_every=4 train.progress=false ${EXTRA:-})   # EXTRA=train.parallel=layers: layer-parallel over the tasks
python -m torch.distributed.run --nproc_per_node=2 --master_port=29631 -m localssl pretrain "${COMMON[@]}" \
  out_dir=full > full.log 2>&1 || { echo "the uninterrupted torchrun run failed"; exit 1; }
run localssl pretrain "${COMMON[@]}" out_dir=runs --launcher slurm --nodes 1 --executor tasks_per_node=2 \
  --executor cpus_per_task=1 --executor timeout_min=30 | tee submit.txt
job=$(sed -n 's/.*submitted job \([0-9]*\);.*/\1/p' submit.txt)
run_dir=$(ls -d runs/clapp++-*)
until [ -f "$run_dir/steps.csv" ] && [ "$(wc -l < "$run_dir/steps.csv")" -ge 4 ]; do sleep 0.2; done
run scancel --signal=USR2 "$job"
while [ "$(squeue -h -j "$job" -t all -o %T)" != COMPLETED ]; do
  state=$(squeue -h -j "$job" -t all -o %T)
  case $state in FAILED|CANCELLED|TIMEOUT|NODE_FAIL) echo "job $job ended $state"; exit 1;; esac
  sleep 2
done
run bash -c "scontrol show job $job | grep -o 'JobState=[A-Z]* \|Restarts=[0-9]*' | tr -d ' '"
grep -hi "stopped by SIGUSR2\|preempted\|requeu" runs/slurm/"${job}"_0_log.err | sed "s|$WORK/||g" | cut -c1-220
python - full/clapp++-* "$run_dir" <<'PY'
import sys
import torch
full, resumed = (torch.load(f"{d}/checkpoint.pt", weights_only=True) for d in sys.argv[1:])
same = all(torch.equal(full[k][n], resumed[k][n]) for k in ("encoder", "rule") for n in full[k])
print(f"requeued run: global step {resumed['global_step']} (uninterrupted torchrun: {full['global_step']}); "
      f"weights equal: {same}")
PY
