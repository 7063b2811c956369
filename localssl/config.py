"""Typed run configuration: YAML presets + ``key=value`` overrides, unknown keys are errors.

A run is ``data × views × model × objective × rule`` plus training and probe settings. The four component sections
are typed by the dataclass the named component registered (:mod:`localssl.registry`), so ``objective.f=softplus`` is
checked against the objective actually used. Presets live in ``localssl/configs/*.yaml`` (``configs/`` at the
repository root links there); ``inherit: NAME`` starts from another one. A run's ``config.yaml`` records, under
``components:``, each non-built-in component's module (``component_sources``), read only to say what to import when
the component is missing, never imported from here.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from pathlib import Path
from typing import Any

import yaml

from localssl.registry import MODELS, OBJECTIVES, RULES, VIEWS, ConfigError, build_dataclass
from localssl.safe_files import read_text

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclasses.dataclass
class DataConfig:
    """Which dataset, where it lives and how much of it to use."""

    name: str = "cifar10"
    root: str | None = None  # None: $LOCALSSL_DATA, then ./data, then ../shared/data
    train_subset: int | None = None  # first N (shuffled with the seed) pretraining images
    pretrain_split: str = "auto"  # auto: 'unlabeled' stl10 (paper), 'unlabeled+train' folder with unlabeled/, or train
    on_device: bool = True  # keep the uint8 dataset on the training device
    image_size: int | None = None  # folder only: resize every image to N×N (None: all share one square size)
    mean: list[float] | None = None  # folder only: per-channel mean in [0, 1] (None: from the train images)
    std: list[float] | None = None  # folder only: per-channel std (None: from the train images)
    labels: str = "auto"  # pretraining labels: auto (the data's) | speaker (audio: each frame its utterance's speaker)

    def __post_init__(self) -> None:
        if self.labels not in ("auto", "speaker"):
            raise ValueError(f"data.labels must be auto or speaker, got {self.labels!r}")
        folder_only = [k for k in ("image_size", "mean", "std") if getattr(self, k) is not None]
        if folder_only and self.name != "folder":
            raise ValueError(
                f"data.{folder_only[0]} applies to data.name=folder only ({self.name}'s settings are fixed); remove it"
            )
        if self.image_size is not None and (
            isinstance(self.image_size, bool) or not isinstance(self.image_size, int) or self.image_size < 1
        ):
            raise ValueError(f"data.image_size must be a whole number of pixels >= 1, got {self.image_size!r}")
        for key in ("mean", "std"):
            value = getattr(self, key)
            if value is None:
                continue
            if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(_is_number(v) for v in value):
                raise ValueError(f"data.{key} must be 3 numbers (R, G, B in [0, 1]), e.g. data.{key}=[0.5,0.5,0.5]")
            if key == "std" and min(value) <= 0:
                raise ValueError(f"data.std must be > 0 for every channel, got {list(value)}")
            setattr(self, key, [float(v) for v in value])


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclasses.dataclass
class TrainConfig:
    """Optimisation settings (CLAPP++ defaults: AdamW 2e-4, batch 32 images, 300 epochs)."""

    epochs: int = 300
    batch_size: int = 32
    lr: float = 2e-4
    weight_decay: float | str = "auto"  # auto: the dataset's paper value (1e-5 Tiny ImageNet, else 0)
    optimizer: str = "adamw"  # adamw | adam | sgd
    momentum: float = 0.9  # sgd only
    schedule: str = "constant"  # constant (paper) | cosine (linear warmup, then cosine decay to min_lr)
    warmup_epochs: float = 0.0  # cosine only: linear warmup length, in epochs (fractions allowed)
    min_lr: float = 0.0  # cosine only: the learning rate at the last step
    seed: int = 0
    device: str = "auto"  # auto: cuda if available, else cpu
    precision: str = "auto"  # auto (bf16 where the device computes it natively, else fp32) | fp32 | bf16 (autocast)
    precision_requested: str | None = None  # written by the run: 'auto' when precision above was chosen by auto
    channels_last: bool | str = "auto"  # auto: on CUDA and with bf16
    compile: bool | str = False  # true: torch.compile each layer and its objective | reduce-overhead: + CUDA graphs
    step_each_layer: bool = False  # one optimizer per layer, stepped right after that layer's backward
    max_steps_per_epoch: int | None = None  # cut epochs short (quick runs, benchmarks)
    log_every: int = 50  # steps between metric rows and NaN checks
    checkpoint_every: int | None = None  # also checkpoint every N global steps mid-epoch (None: epoch ends only)
    checkpoint_every_minutes: float | None = None  # also checkpoint mid-epoch once N minutes passed since the last
    tensorboard: bool = False  # also write the metric rows to RUN_DIR/tensorboard (extra: tensorboard)
    progress: bool = True
    online_probe: bool = False  # the honest probe (probe.* classifier) of each layer and all layers, during training
    online_probe_every: int | None = None  # also score it every N steps (first steps.csv row on); None: epoch ends
    online_probe_train: int = 45000  # labelled pretraining images the read-outs are fitted on (a tenth: validation)
    online_probe_holdout: int = 5000  # other labelled pretraining images, scored and never fitted on
    online_probe_lr: float | None = None  # removed: the read-outs use probe.lr, probe.epochs, probe.batch_size
    online_probe_batch: int | None = None  # removed: the read-outs are fitted on train.online_probe_train images
    parallel: str = "data"  # under torchrun: data (every rank a slice of the batch) | layers (every rank a stage)
    stage_bounds: list[int] | str = "auto"  # parallel=layers: layers before each stage cut ([2,4]: 1-2|3-4|5-..)
    stage_timeout: float = 300.0  # parallel=layers: seconds a stage waits for another before it stops the run
    stage_queue: int = 2  # parallel=layers: batches a stage may send ahead of the next stage's receive

    def __post_init__(self) -> None:
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"train.precision must be auto, fp32 or bf16, got {self.precision!r}")
        if self.parallel not in PARALLEL_MODES:
            raise ConfigError(f"train.parallel must be one of {', '.join(PARALLEL_MODES)}, got {self.parallel!r}")
        bounds = self.stage_bounds  # a list of ints (type(True) is bool, not int)
        if bounds != "auto" and not (isinstance(bounds, (list, tuple)) and all(type(b) is int for b in bounds)):
            raise ConfigError(f"train.stage_bounds must be auto or a list of layer counts like [2,4], got {bounds!r}")
        if not self.stage_timeout > 0:
            raise ConfigError(f"train.stage_timeout must be > 0 seconds, got {self.stage_timeout!r}")
        if not isinstance(self.stage_queue, int) or self.stage_queue < 1:
            raise ConfigError(f"train.stage_queue must be an integer >= 1, got {self.stage_queue!r}")
        if self.compile not in COMPILE_MODES:
            raise ConfigError(
                f"train.compile must be false, true or reduce-overhead (CUDA graphs), got {self.compile!r}"
            )


COMPILE_MODES = (False, True, "reduce-overhead")
PARALLEL_MODES = ("data", "layers")


@dataclasses.dataclass
class ProbeConfig:
    """Linear probe on the concatenated pooled features of all layers (CLAPP++ App. B)."""

    protocol: str = "honest"  # honest (val split, z-scored, fixed features) | paper (the authors' eval_ssl.py)
    epochs: int = 30
    lr: float = 1e-3
    batch_size: int = 256
    weight_decay: float = 0.0
    val_size: int = 5000  # held out from the labelled train split for model selection
    augment_copies: int = 0  # cached augmented (crop+flip) copies of the train set; 0 = plain images
    layers: str = "all"  # 'all' or comma-separated 1-based layer indices, e.g. '4,5,6'
    standardize: bool = True  # z-score features with train statistics
    train_subset: int | None = None  # use only N labelled train images (quick runs)
    seed: int = 0
    cache_features: bool = False  # keep features-<key>.pt in the run dir (~1 GB at width 1/8 on CIFAR-10)
    progress: bool = True  # progress bars (stderr) for feature extraction and probe epochs; off if train.progress=false
    target: str = "frames"  # audio: frames (a class per 10 ms) | speaker (per utterance, time-averaged features)
    precision: str = "run"  # features read out in: run (the run's; its auto as chosen here) | fp32 | bf16

    def __post_init__(self) -> None:
        if self.precision not in ("run", "fp32", "bf16"):
            raise ConfigError(f"probe.precision must be run, fp32 or bf16, got '{self.precision}'")


@dataclasses.dataclass
class RunConfig:
    name: str = "run"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    views: Any = None
    model: Any = None
    objective: Any = None
    rule: Any = None
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    probe: ProbeConfig = dataclasses.field(default_factory=ProbeConfig)
    out_dir: str = "runs"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
        return out


_SECTIONS_PLAIN = {"data": DataConfig, "train": TrainConfig, "probe": ProbeConfig}
_SECTIONS_COMPONENT = {"views": VIEWS, "model": MODELS, "objective": OBJECTIVES, "rule": RULES}
_TOP_SCALARS = {"name", "out_dir"}
_COMPONENTS = "components"  # config.yaml only: section -> module of a component not built into localssl


def component_sources(cfg: RunConfig) -> dict[str, str]:
    """``{section: module}`` for each component of ``cfg`` that is not built into localssl (the module
    that registered it; a file for a script), as recorded in a run's ``config.yaml``."""
    sources = {key: registry.source(getattr(cfg, key).name) for key, registry in _SECTIONS_COMPONENT.items()}
    return {key: source for key, source in sources.items() if source is not None}


def missing_component(section: str, name: str, source: str) -> str:
    """The error for a run whose ``section`` component ``name``, registered by ``source``, is not
    registered now: what to import, since localssl never imports a run's code by itself."""
    where = f"{section} '{name}' is not built into localssl and is not registered"
    if source == "__main__":
        return (
            f"{where}: the run registered it in an interactive session (a notebook). Move its code into a "
            "module file and import it: `--import my_module` on the command line, `import my_module` in Python"
        )
    recorded = f"{where}: the run recorded that it came from {source} (config.yaml, {_COMPONENTS}.{section})"
    if source.endswith(".py"):
        return (
            f"{recorded}. Import it with `--import {source}` on the command line "
            f"(in Python: `localssl.import_components(['{source}'])`)"
        )
    return (
        f"{recorded}. Import it with `--import {source}` on the command line (in Python: `import {source}`), "
        "or install the package that provides it"
    )


def available_presets() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def load_yaml_preset(name_or_path: str) -> dict[str, Any]:
    """Read a preset by name (``clapp++``) or by path (``my.yaml``), following ``inherit:``."""
    path = Path(name_or_path)
    if not (path.suffix in {".yaml", ".yml"} and path.exists()):
        path = CONFIG_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        raise ConfigError(f"no preset or YAML file '{name_or_path}'; presets: {', '.join(available_presets())}")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a preset must be a YAML mapping")
    own_name = raw.get("name") or path.stem
    parent = raw.pop("inherit", None)
    if parent is not None:
        raw = merge(load_yaml_preset(str(parent)), raw)
    raw["name"] = own_name
    return raw


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; a component section whose ``name`` changes is replaced, not merged
    (``data`` keeps its other keys when ``data.name`` changes)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            if key in _SECTIONS_COMPONENT and "name" in value and value["name"] != out[key].get("name"):
                out[key] = copy.deepcopy(value)
            else:
                out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``['train.epochs=4', 'objective.f=softplus']`` -> nested dict (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value (e.g. train.epochs=4)")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override '{item}': empty key part")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}' conflicts with another override")
        node[parts[-1]] = yaml.safe_load(value) if value != "" else None
    return out


def config_from_dict(raw: dict[str, Any]) -> RunConfig:
    """Validate a raw nested dict into a :class:`RunConfig` (every key must be known). A ``components``
    mapping (a run's record of where its components came from) is checked and used only to name the
    module to import when one of them is not registered."""
    valid_top = sorted(_TOP_SCALARS | set(_SECTIONS_PLAIN) | set(_SECTIONS_COMPONENT) | {_COMPONENTS})
    unknown = sorted(set(raw) - set(valid_top))
    if unknown:
        raise ConfigError(f"unknown top-level key(s) {', '.join(unknown)}; valid keys: {', '.join(valid_top)}")
    sources = raw.get(_COMPONENTS) or {}
    if not isinstance(sources, dict) or not set(sources) <= set(_SECTIONS_COMPONENT):
        raise ConfigError(
            f"'{_COMPONENTS}' must map a component section ({', '.join(_SECTIONS_COMPONENT)}) to the module "
            f"it came from, got {sources!r}"
        )
    kwargs: dict[str, Any] = {k: raw[k] for k in _TOP_SCALARS if k in raw}
    for key, cls in _SECTIONS_PLAIN.items():
        section = raw.get(key) or {}
        if not isinstance(section, dict):
            raise ConfigError(f"'{key}' must be a mapping, got {section!r}")
        kwargs[key] = build_dataclass(cls, section, where=key)
    for key, registry in _SECTIONS_COMPONENT.items():
        section = raw.get(key)
        if section is None:
            raise ConfigError(f"the config has no '{key}' section (valid names: {', '.join(registry.names())})")
        if isinstance(section, str):
            section = {"name": section}
        name = section.get("name") if isinstance(section, dict) else None
        if key in sources and name is not None and str(name) not in registry:
            raise ConfigError(missing_component(key, str(name), str(sources[key])))
        kwargs[key] = registry.make_config(section)
    cfg = RunConfig(**kwargs)
    validate(cfg)
    return cfg


# (key, value must be ...) checks on the numbers a run needs; ``None`` means "not set" and is allowed.
_AT_LEAST_ONE = (
    "train.batch_size",
    "train.log_every",
    "train.max_steps_per_epoch",
    "train.online_probe_every",
    "train.online_probe_holdout",
    "train.online_probe_train",
    "train.checkpoint_every",
    "data.train_subset",
    "probe.epochs",
    "probe.batch_size",
    "probe.train_subset",
)
_AT_LEAST_ZERO = (
    "train.epochs",
    "train.min_lr",
    "train.weight_decay",
    "probe.val_size",
    "probe.weight_decay",
    "probe.augment_copies",
)
_POSITIVE = ("train.lr", "probe.lr", "train.checkpoint_every_minutes")
PROBE_PROTOCOLS = ("honest", "paper")
# Online-probe settings removed by issue 26, with the default every config.yaml written before held (accepted
# silently, so those runs still load; any other value is an error naming the settings that replace them).
_REMOVED_ONLINE_PROBE = {"train.online_probe_lr": 1e-3, "train.online_probe_batch": 8}
# model.width is checked by the model config, train.warmup_epochs by localssl.schedule.check_schedule


def validate(cfg: RunConfig) -> None:
    """Refuse numbers no run can use (batch size 0, negative epochs, lr <= 0, ...) with an
    error naming the key and the fix, before anything is written to disk."""

    def value(key: str) -> Any:
        section, name = key.split(".")
        return getattr(getattr(cfg, section), name, None)

    def bad(key: str, need: str) -> None:
        raise ConfigError(
            f"{key}={value(key)!r} is invalid: it must be {need} (set e.g. {key}=... on the command line)"
        )

    if cfg.probe.protocol not in PROBE_PROTOCOLS:
        raise ConfigError(
            f"probe.protocol={cfg.probe.protocol!r} is invalid: it must be one of {', '.join(PROBE_PROTOCOLS)}"
            " (e.g. probe.protocol=paper)"
        )
    removed = {k: value(k) for k, old in _REMOVED_ONLINE_PROBE.items() if value(k) not in (None, old)}
    if removed:
        given = ", ".join(f"{k}={v!r}" for k, v in removed.items())
        raise ConfigError(
            f"{given}: removed (issue 26). The online probe no longer trains an SGD read-out on a few images of each "
            "batch: it fits the offline probe's classifier (probe.epochs, probe.lr, probe.batch_size) on "
            "train.online_probe_train labelled images every train.online_probe_every steps and at epoch ends. "
            "Drop the setting (and set those instead)"
        )
    for keys, ok, need in (
        (_AT_LEAST_ONE, lambda v: v >= 1, "a whole number >= 1"),
        (_AT_LEAST_ZERO, lambda v: v >= 0, ">= 0"),
        (_POSITIVE, lambda v: v > 0 and math.isfinite(v), "a finite number > 0"),
    ):
        for key in keys:
            v = value(key)
            if v is None or isinstance(v, str):  # unset, or 'auto' (resolved later)
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not ok(v):
                bad(key, need)
            if need.startswith("a whole") and not isinstance(v, int):
                bad(key, need)


def load_config(preset: str, overrides: list[str] | None = None) -> RunConfig:
    """Preset name or YAML path + ``key=value`` overrides -> validated :class:`RunConfig`."""
    raw = merge(load_yaml_preset(preset), parse_overrides(overrides or []))
    return config_from_dict(raw)


def field_comments(cls: type) -> dict[str, str]:
    """Meaning of each field of dataclass ``cls``: its trailing ``# comment`` in the source (the one
    place the meaning is written), else the class docstring's first line."""
    import inspect
    import re

    try:
        src = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    out = {}
    for m in re.finditer(r"^\s+(\w+):[^#\n]*#\s*(.+)$", src, re.MULTILINE):
        out[m.group(1)] = m.group(2).strip()
    return out


def describe_config(cfg: RunConfig) -> str:
    """The resolved config as ``section.key = value  # meaning`` lines (``localssl config``)."""
    lines = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            doc = (type(value).__doc__ or "").strip().splitlines()
            doc = [] if not doc or doc[0].startswith(f"{type(value).__name__}(") else doc  # dataclass's own
            lines.append(f"# {f.name}: {type(value).__name__}" + (f" — {doc[0]}" if doc else ""))
            notes = field_comments(type(value))
            for sub in dataclasses.fields(value):
                note = notes.get(sub.name, "")
                lines.append(f"{f.name}.{sub.name} = {getattr(value, sub.name)!r}" + (f"  # {note}" if note else ""))
        else:
            lines.append(f"{f.name} = {value!r}")
    return "\n".join(lines)


def save_config(cfg: RunConfig, path: Path) -> None:
    """Write ``cfg`` as YAML, with the ``components:`` record of where its non-built-in components came from."""
    from localssl.utils import atomic_write_bytes

    raw = cfg.to_dict()
    sources = component_sources(cfg)
    if sources:
        raw[_COMPONENTS] = sources
    text = yaml.safe_dump(raw, sort_keys=False)
    atomic_write_bytes(Path(path), lambda fh: fh.write(text.encode()))


def read_run_config(run_dir: Path, overrides: list[str] | None = None) -> RunConfig:
    """The run's ``config.yaml`` (+ overrides), validated; a malformed file is refused by name (ConfigError).
    Imports no code: a component of the run that is not registered is an error naming the module its
    ``components:`` record says to import."""
    path = Path(run_dir) / "config.yaml"
    if not (path.exists() or path.is_symlink()):  # a planted link or special file: safe_files names it
        what = "does not exist" if not Path(run_dir).exists() else "is not a run folder (it has no config.yaml)"
        raise ConfigError(f"{run_dir} {what}; give a run folder, as printed by `localssl pretrain`")
    try:
        raw = yaml.safe_load(read_text(path))  # a regular file only, read to a bound (safe_files)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{path} is not valid YAML ({str(exc).splitlines()[0]}); the run's checkpoints are untouched. "
            "Restore the file (it is rewritten by every start of the run) or fix the line it names."
        ) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} does not hold a run's settings (a YAML mapping); restore the file")
    return config_from_dict(merge(raw, parse_overrides(overrides or [])))


def default_data_root() -> Path:
    """``$LOCALSSL_DATA``, else ``./data`` if present, else ``../shared/data`` if present."""
    if env := os.environ.get("LOCALSSL_DATA"):
        return Path(env).expanduser()
    for candidate in (Path("data"), Path("..") / "shared" / "data"):
        if candidate.is_dir():
            return candidate.resolve()
    return Path("data").resolve()
