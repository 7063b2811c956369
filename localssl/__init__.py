"""localssl: local self-supervised learning rules under one formalism (Delrocq et al. 2026, Sec. 3).

A training recipe is ``model × views × objective × credit assignment``, each chosen by name in a
config (see ``localssl/configs``). The names a user needs are here, e.g.::

    import localssl

    run_dir = localssl.pretrain(localssl.load_config("clapp++", ["train.epochs=1"]))
    localssl.probe(run_dir)
    encoder = localssl.load_encoder("runs/RUN/export/clapp++-<hash>.safetensors")  # after `localssl export RUN`

A component of your own registers with ``@localssl.OBJECTIVES.register(name, Config)`` (or ``RULES``,
``VIEWS``, ``MODELS``) and implements the interface declared for it (:class:`Objective`,
:class:`ViewGenerator`, :class:`Rule`); ``examples/`` holds one objective and one rule. The ``localssl``
CLI finds it with ``--import MODULE`` (see :mod:`localssl.registry`).

Each name is imported on first use, so ``import localssl`` itself costs nothing (torch is not loaded).
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # not typing's: importing typing would cost more than all of this module

__version__ = "0.1.0"

# public name -> the module that defines it
_PUBLIC = {
    **dict.fromkeys(("load_config", "read_run_config", "RunConfig"), "localssl.config"),
    **dict.fromkeys(("pretrain", "resume"), "localssl.train"),
    "probe": "localssl.evaluate.probe",
    **dict.fromkeys(("load_encoder", "features"), "localssl.evaluate.pretrained"),
    "export_run": "localssl.evaluate.export",
    **dict.fromkeys(
        ("OBJECTIVES", "RULES", "VIEWS", "MODELS", "ConfigError", "import_components"), "localssl.registry"
    ),
    **dict.fromkeys(("Rule", "StepContext", "NO_CONTEXT", "Metrics", "build_objective"), "localssl.rules.base"),
    **dict.fromkeys(
        ("Objective", "LossOut", "LayerSpec", "SpatialPool", "resolve_pool_kernel"), "localssl.objectives.base"
    ),
    **dict.fromkeys(("ViewGenerator", "ViewBatch", "Normalize"), "localssl.views.base"),
    "LayeredEncoder": "localssl.models.base",
    "DatasetInfo": "localssl.data",
}

__all__ = [
    "MODELS",
    "NO_CONTEXT",
    "OBJECTIVES",
    "RULES",
    "VIEWS",
    "ConfigError",
    "DatasetInfo",
    "LayerSpec",
    "LayeredEncoder",
    "LossOut",
    "Metrics",
    "Normalize",
    "Objective",
    "Rule",
    "RunConfig",
    "SpatialPool",
    "StepContext",
    "ViewBatch",
    "ViewGenerator",
    "build_objective",
    "export_run",
    "features",
    "import_components",
    "load_config",
    "load_encoder",
    "pretrain",
    "probe",
    "read_run_config",
    "resolve_pool_kernel",
    "resume",
]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'localssl' has no attribute '{name}'")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})


if TYPE_CHECKING:  # the same names, for type checkers and editors
    from typing import Any

    from localssl.config import RunConfig, load_config, read_run_config
    from localssl.data import DatasetInfo
    from localssl.evaluate.export import export_run
    from localssl.evaluate.pretrained import features, load_encoder
    from localssl.evaluate.probe import probe
    from localssl.models.base import LayeredEncoder
    from localssl.objectives.base import LayerSpec, LossOut, Objective, SpatialPool, resolve_pool_kernel
    from localssl.registry import MODELS, OBJECTIVES, RULES, VIEWS, ConfigError, import_components
    from localssl.rules.base import NO_CONTEXT, Metrics, Rule, StepContext, build_objective
    from localssl.train import pretrain, resume
    from localssl.views.base import Normalize, ViewBatch, ViewGenerator
