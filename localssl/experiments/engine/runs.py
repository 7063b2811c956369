"""Run or reuse one run of a reproduced table: its key, its folder in the run store, its probe.

**Run or reuse.** A run lives in ``RUNS/<preset>-<key>/``; ``key`` hashes the resolved config's
non-default settings (:func:`key_dict`) without those that cannot change what is learned (``name``,
``out_dir``, ``data.root``, ``train.device``, ``train.progress``, ``train.log_every``) and without the
``probe`` section, together with :data:`KEY_VERSION`. A finished run is reused; a run with a checkpoint
but fewer epochs is continued with :func:`localssl.train.resume` (bit-identical to an uninterrupted
run); a run that died before its first checkpoint is restarted. A probe is reused when ``probe.json``
holds the same probe settings for the same checkpoint epoch, or when ``probes.json`` (the engine's record of
every probe setting it has run on that run: a table that probes one run two ways, phones and speakers, keeps
both) does. ``RUNS`` is ``$LOCALSSL_RUNS`` if set,
else ``OUT/runs``. :class:`RunLock` lets several processes work through the same run store.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from localssl.config import ProbeConfig, RunConfig, read_run_config
from localssl.experiments.engine.report import code_version
from localssl.registry import ConfigError
from localssl.safe_files import process_alive, read_text
from localssl.utils import atomic_write_json

# Bump when a code change makes earlier runs invalid: every run is then retrained. 2 (2026-12-01): the
# clapp++both default became two hinge losses (objective.combine=sum_losses), STL-10 pretrains on the
# unlabeled split with the official normalisation, and the probe classifier's init is seeded by probe.seed.
KEY_VERSION = 3  # 3: train.precision=auto (bf16 + channels_last where the CPU/GPU computes bf16 natively)

# Settings that do not change what a run learns: left out of its key (and free to differ on reuse).
KEY_EXCLUDED = {
    "name": None,
    "out_dir": None,
    "probe": None,
    "data": ("root",),
    "train": ("device", "progress", "log_every", "checkpoint_every", "checkpoint_every_minutes"),
}


# --------------------------------------------------------------------------------------- run keys
def _non_default(section: Any) -> dict[str, Any]:
    """A config section's fields that differ from the section's defaults (``name`` always kept)."""
    values = dataclasses.asdict(section)
    try:
        defaults = dataclasses.asdict(type(section)())
    except TypeError:  # a section without defaults for every field: keep it whole
        return values
    return {k: v for k, v in values.items() if k == "name" or k not in defaults or v != defaults[k]}


def key_dict(cfg: RunConfig) -> dict[str, Any]:
    """What a run learns from: every config section's non-default settings, after the dataset's ``auto``
    values are resolved, without the settings in :data:`KEY_EXCLUDED`. Keeping only non-default values
    means that a new option added to the library (with a default that keeps the old behaviour) leaves
    existing runs valid; a change of behaviour (code or default) needs a :data:`KEY_VERSION` bump."""
    from localssl.train import resolve_config

    cfg = resolve_config(cfg)
    raw: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        excluded = KEY_EXCLUDED.get(f.name, ())
        if excluded is None:
            continue
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            raw[f.name] = {k: v for k, v in _non_default(value).items() if k not in excluded}
        else:
            raw[f.name] = value
    return raw


def run_key(cfg: RunConfig) -> str:
    """12 hex digits identifying what a run learns: same config (and :data:`KEY_VERSION`) -> same key."""
    blob = json.dumps({"key_version": KEY_VERSION, "config": key_dict(cfg)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def runs_root(out: Path) -> Path:
    env = os.environ.get("LOCALSSL_RUNS")
    return Path(env).expanduser() if env else Path(out) / "runs"


def find_run_dir(cfg: RunConfig, runs_dir: Path) -> Path:
    """The directory of ``cfg``'s run: an existing ``*-<key>`` one (any preset name), else a new name."""
    key = run_key(cfg)
    existing = sorted(Path(runs_dir).glob(f"*-{key}"))
    if existing:
        return existing[0]
    slug = "".join(c if c.isalnum() or c in "+-_." else "_" for c in cfg.name)
    return Path(runs_dir) / f"{slug}-{key}"


# --------------------------------------------------------------------------------------- run or reuse
def finished_epochs(run_dir: Path) -> int | None:
    summary = run_dir / "summary.json"
    if not (summary.exists() and (run_dir / "checkpoint.pt").exists()):
        return None
    return int(json.loads(read_text(summary)).get("epochs", -1))


def finished_steps(run_dir: Path) -> int:
    return int(json.loads(read_text(run_dir / "summary.json")).get("global_step", 0))


def run_or_reuse(cfg: RunConfig, runs_dir: Path) -> tuple[Path, str]:
    """Train ``cfg`` unless its run exists: returns ``(run_dir, 'trained' | 'resumed' | 'reused')``."""
    from localssl.train import pretrain, resume

    run_dir = find_run_dir(cfg, runs_dir)
    if (run_dir / "config.yaml").exists():
        try:
            stored = run_key(read_run_config(run_dir))
        except ConfigError as err:
            raise ConfigError(
                f"{run_dir}/config.yaml cannot be read by this version of localssl ({err}); delete the directory "
                "to retrain that run"
            ) from err
        if stored != run_key(cfg):
            raise RuntimeError(
                f"{run_dir}/config.yaml does not match its key (stored config hashes to {stored}); "
                "the directory was edited or copied by hand: delete it to retrain"
            )
    if finished_epochs(run_dir) == cfg.train.epochs:
        return run_dir, "reused"
    cpu0 = time.process_time()
    if (run_dir / "checkpoint.pt").exists():  # interrupted: continue exactly where it stopped
        resume(run_dir, [f"data.root={cfg.data.root}"] if cfg.data.root else [])
        _record(run_dir, pretrain_cpu_s=time.process_time() - cpu0)
        return run_dir, "resumed"
    for stale in ("metrics.csv", "steps.csv", "summary.json", "probe.json", PROBES_FILE):  # died before its first epoch
        (run_dir / stale).unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_provenance(cfg, run_dir)
    pretrain(cfg, run_dir)
    _record(run_dir, pretrain_cpu_s=time.process_time() - cpu0)
    return run_dir, "trained"


def _write_provenance(cfg: RunConfig, run_dir: Path) -> None:
    """``harness.json``: the run's key, the code that created it, and (later) its CPU seconds."""
    atomic_write_json(
        {"key": run_key(cfg), "key_version": KEY_VERSION, "code": code_version(), "created": time.strftime("%F %T")},
        run_dir / "harness.json",
    )


def read_provenance(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "harness.json"
    return json.loads(read_text(path)) if path.exists() else {}


def _record(run_dir: Path, **seconds: float) -> None:
    """Add process CPU seconds (all threads) to ``harness.json`` (summed over resumes)."""
    info = read_provenance(run_dir)
    for k, v in seconds.items():
        info[k] = round(info.get(k, 0.0) + v, 1)
    atomic_write_json(info, run_dir / "harness.json")


def _probe_signature(settings: dict[str, Any]) -> dict[str, Any]:
    """Probe settings that differ from the defaults (as for run keys: a new probe option keeps old probes)."""
    defaults = dataclasses.asdict(ProbeConfig())
    defaults.pop("progress")  # progress bars change no result
    return {k: settings.get(k, v) for k, v in defaults.items() if settings.get(k, v) != v}


def probe_overrides(cfg: RunConfig) -> list[str]:
    """Every ``probe.*`` setting of ``cfg`` as an override (the run's stored probe section is not trusted)."""
    return [f"probe.{k}={json.dumps(v)}" for k, v in dataclasses.asdict(cfg.probe).items()]


PROBES_FILE = "probes.json"


def _same_probe(result: dict[str, Any], cfg: RunConfig, epochs: int | None) -> bool:
    """Whether ``result`` was written with ``cfg.probe`` at checkpoint ``epochs``."""
    same = _probe_signature(result.get("probe") or {}) == _probe_signature(dataclasses.asdict(cfg.probe))
    protocol = result.get("protocol", cfg.probe.protocol)
    return same and protocol == cfg.probe.protocol and result.get("checkpoint_epoch") == epochs


def _kept_probes(run_dir: Path) -> list[dict[str, Any]]:
    """``run_dir/probes.json``'s results (an unreadable file keeps none: they are recomputed, never guessed)."""
    from localssl.evaluate.probe import in_percent

    path = run_dir / PROBES_FILE
    if not path.exists():
        return []
    try:
        kept = json.loads(read_text(path))
    except ValueError:
        return []
    return [in_percent(r) for r in kept.get("results", []) if isinstance(r, dict)] if isinstance(kept, dict) else []


def _keep_probe(run_dir: Path, cfg: RunConfig, result: dict[str, Any]) -> None:
    """Add ``result`` to ``run_dir/probes.json``, replacing the one of the same settings and checkpoint."""
    kept = [r for r in _kept_probes(run_dir) if not _same_probe(r, cfg, result.get("checkpoint_epoch"))]
    atomic_write_json({"results": [*kept, result]}, run_dir / PROBES_FILE)


def _reusable_probe(cfg: RunConfig, run_dir: Path, epochs: int | None) -> dict | None:
    """The result of a probe with ``cfg.probe`` at checkpoint ``epochs``: from ``run_dir/probe.json`` (the last
    probe of the run, whoever ran it) or ``run_dir/probes.json`` (every setting the engine probed), else ``None``."""
    from localssl.evaluate.probe import in_percent

    path = run_dir / "probe.json"
    if path.exists():
        old = in_percent(json.loads(read_text(path)))  # a file from before the unit was in the key names
        old = old.get(cfg.probe.protocol) or old  # probe.json keeps each protocol's result under its name
        if _same_probe(old, cfg, epochs):
            return old
    return next((r for r in reversed(_kept_probes(run_dir)) if _same_probe(r, cfg, epochs)), None)


def probe_done(cfg: RunConfig, run_dir: Path, epochs: int | None) -> bool:
    """Whether :func:`probe_or_reuse` would reuse ``run_dir``'s probe (nothing to compute)."""
    return _reusable_probe(cfg, run_dir, epochs) is not None


def probe_or_reuse(cfg: RunConfig, run_dir: Path, epochs: int, keep_features: bool = False) -> tuple[dict, str]:
    """``probe.json`` of ``run_dir`` if it was written with ``cfg.probe`` at checkpoint ``epochs``, else probe."""
    from localssl.evaluate.probe import probe

    old = _reusable_probe(cfg, run_dir, epochs)
    if old is not None:
        return old, "reused"
    extra = [f"data.root={cfg.data.root}"] if cfg.data.root else []
    # the feature cache (all train and test images, ~1 GB at width 1/8 on CIFAR-10) is not needed:
    # probe.json is what is reused
    cpu0 = time.process_time()
    result = probe(run_dir, [*probe_overrides(cfg), *extra], cache_features=keep_features)
    _record(run_dir, probe_cpu_s=time.process_time() - cpu0)
    _keep_probe(run_dir, cfg, result)
    return result, "probed"


class RunLock:
    """``RUNS/.<key>.lock``: one process at a time trains or probes a run, so several processes can work
    through the same grid (``localssl reproduce ...`` started twice uses two cores). A lock whose
    process died on this machine is taken over; ``wait=True`` polls until the holder releases it."""

    poll_s = 10.0

    def __init__(self, runs_dir: Path, key: str, wait: bool) -> None:
        self.path = Path(runs_dir) / f".{key}.lock"
        self.wait, self.held, self.holder = wait, False, ""

    def _try(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = f"{socket.gethostname()} {os.getpid()}"
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                self.holder = read_text(self.path).strip()
            except FileNotFoundError:  # released meanwhile
                return self._try()
            host, _, pid = self.holder.partition(" ")
            if host == socket.gethostname() and pid.isdigit() and not process_alive(int(pid)):
                self.path.unlink(missing_ok=True)  # stale: its process died
                return self._try()
            self.holder = f"process {pid} on {host}"
            return False
        with os.fdopen(fd, "w") as fh:
            fh.write(me)
        return True

    def __enter__(self) -> RunLock:
        self.held = self._try()
        while not self.held and self.wait:
            time.sleep(self.poll_s)
            self.held = self._try()
        return self

    def __bool__(self) -> bool:
        return self.held

    def __exit__(self, *exc: object) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
