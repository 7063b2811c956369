"""Training: checks and set-up done once (:mod:`.setup`), the trainer's loop (:mod:`.trainer`), its
optimizers (:mod:`.optimizers`), step metrics (:mod:`.metrics`), the device fast path (:mod:`.fast_path`),
layer-parallel stages (:mod:`.pipeline`, :mod:`.stages`, :mod:`.stage_plan`,
:mod:`.stage_state`) and starting or continuing a run (:mod:`.run`)."""

from localssl.checkpoint import RESUME_OVERRIDABLE, check_config_unchanged, config_fingerprint
from localssl.data.pretrain import load_pretrain_data
from localssl.train.fast_path import compile_step
from localssl.train.metrics import DeviceSums, NonFiniteLossError
from localssl.train.pipeline import PipelineTrainer
from localssl.train.run import make_trainer, new_run_dir, pretrain, resume
from localssl.train.setup import RunSetup, check_online_probe, check_world, resolve_config
from localssl.train.stages import StageLostError
from localssl.train.stop import StopRequested
from localssl.train.trainer import Trainer

__all__ = [
    "RESUME_OVERRIDABLE",
    "DeviceSums",
    "NonFiniteLossError",
    "PipelineTrainer",
    "RunSetup",
    "StageLostError",
    "StopRequested",
    "Trainer",
    "check_config_unchanged",
    "check_online_probe",
    "check_world",
    "compile_step",
    "config_fingerprint",
    "load_pretrain_data",
    "make_trainer",
    "new_run_dir",
    "pretrain",
    "resolve_config",
    "resume",
]
