#!/bin/bash

# Parameters
#SBATCH --array=0-4%5
#SBATCH --cpus-per-task=1
#SBATCH --error=/work/wt-38/slurm/logs/%A_%a_0_log.err
#SBATCH --job-name=localssl-tiny-grid
#SBATCH --nodes=1
#SBATCH --open-mode=append
#SBATCH --output=/work/wt-38/slurm/logs/%A_%a_0_log.out
#SBATCH --signal=USR2@30
#SBATCH --time=30
#SBATCH --wckey=submitit

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output /work/wt-38/slurm/logs/%A_%a_%t_log.out --error /work/wt-38/slurm/logs/%A_%a_%t_log.err /work/venv/bin/python -u -m submitit.core._submit /work/wt-38/slurm/logs
