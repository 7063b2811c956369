"""TensorBoard scalars beside ``steps.csv``/``metrics.csv`` when ``train.tensorboard=true``.

The same rows the CSV files get are written as scalars under ``RUN_DIR/tensorboard/`` (``step/…`` every
``train.log_every`` steps, ``epoch/…`` once per epoch, x axis = global step), plus ``step/lr``. Needs the
optional extra: ``pip install 'localssl[tensorboard]'``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from localssl.registry import ConfigError
from localssl.safe_files import check_folder

_MISSING = (
    "train.tensorboard=true needs the tensorboard package, which is not installed; "
    "install it with `pip install 'localssl[tensorboard]'` or set train.tensorboard=false"
)


def require_tensorboard() -> None:
    """Raise a :class:`ConfigError` naming the fix when tensorboard is not importable."""
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError as err:
        raise ConfigError(_MISSING) from err


class TensorBoardLog:
    """A ``SummaryWriter`` on ``RUN_DIR/tensorboard`` that takes the trainer's CSV rows."""

    def __init__(self, run_dir: Path) -> None:
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        check_folder(Path(run_dir) / "tensorboard")  # a planted link is refused, never written through
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def scalars(self, group: str, row: dict[str, Any], step: int) -> None:
        for key, value in row.items():
            if key not in ("epoch", "step") and isinstance(value, (int, float)):
                self.writer.add_scalar(f"{group}/{key}", value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
