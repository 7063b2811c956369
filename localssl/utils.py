"""Small helpers: atomic file writes, seeding, optimizers."""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import platform
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from localssl.safe_files import append_text, check_file, read_text, temporary_beside, umask_mode


def fsync_dir(folder: Path) -> None:
    """Make the renames inside ``folder`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, write) -> None:
    """Write through a temporary file in the same folder, fsync, then rename over ``path``.

    A crash (or a full disk) leaves the previous file intact: readers never see half a file; a failed
    write removes its temporary file. The file gets the umask's permissions, like any other."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temporary_beside(path)  # a new file: renamed over ``path``, it replaces a link, never its target
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: Any, path: Path) -> None:
    atomic_write_bytes(path, lambda fh: torch.save(obj, fh))


def atomic_write_json(obj: Any, path: Path) -> None:
    atomic_write_bytes(path, lambda fh: fh.write((json.dumps(obj, indent=2, default=float) + "\n").encode()))


def append_csv(path: Path, row: dict[str, Any]) -> None:
    """Append one row; write the header when the file is new (columns fixed by the first row). Only a regular
    file is appended to: a link or special file at ``path`` is refused by name (:mod:`localssl.safe_files`)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(row), extrasaction="ignore")
    if not check_file(path):
        writer.writeheader()
    writer.writerow(row)
    append_text(path, buf.getvalue())


CSV_LIMIT = 1 << 30  # a run's CSV logs: about 100 bytes a row, so a billion bytes is ten million rows


def trim_csv(path: Path, last_step: int) -> None:
    """Drop the rows of a log whose ``step`` column is past ``last_step`` (atomically): the rows a resumed
    run will log again, so that a crash never leaves a duplicated row."""
    path = Path(path)
    if not check_file(path):
        return
    try:
        text = read_text(path, CSV_LIMIT)
        rows = list(csv.reader(io.StringIO(text)))
    except (csv.Error, UnicodeDecodeError) as exc:
        raise ValueError(
            f"{path} is not a readable CSV log ({exc}); the run's checkpoints are untouched. Move the file aside "
            "and resume again: the log then restarts at the checkpoint's step"
        ) from None
    if not rows or "step" not in rows[0]:
        return
    if not text.endswith("\n"):  # a row cut short by a crash
        rows = rows[:-1]
    col, width = rows[0].index("step"), len(rows[0])
    keep = [rows[0]] + [r for r in rows[1:] if len(r) == width and r[col].isdigit() and int(r[col]) <= last_step]
    if len(keep) == len(rows) and text.endswith("\n"):
        return

    def write(fh) -> None:
        buf = io.StringIO()
        csv.writer(buf).writerows(keep)
        fh.write(buf.getvalue().encode())

    atomic_write_bytes(path, write)


def epoch_seed(seed: int, epoch: int) -> int:
    """Per-epoch seed: every epoch's shuffling and augmentation depend only on (seed, epoch),
    which is what makes ``--resume`` bit-identical to an uninterrupted run."""
    return (seed * 1_000_003 + epoch * 7919 + 12345) % (2**63 - 1)


def make_optimizer(
    name: str, params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float, momentum: float = 0.9
) -> torch.optim.Optimizer:
    """AdamW/Adam/SGD, fused where the installed torch supports it for these tensors (3× faster
    than foreach on CPU for the large CLAPP++ ``B`` matrices), else foreach."""
    params = list(params)
    if not params:
        params = [torch.nn.Parameter(torch.zeros(1))]  # frozen rules: an optimizer that does nothing
    cls = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}.get(name)
    if cls is None:
        raise ValueError(f"train.optimizer must be adamw, adam or sgd, got '{name}'")
    kwargs: dict[str, Any] = {"lr": lr, "weight_decay": weight_decay}
    if cls is torch.optim.SGD:
        kwargs["momentum"] = momentum
    try:
        return cls(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return cls(params, foreach=True, **kwargs)


_OS_FIXES = {
    errno.ENOSPC: "free space on that disk, or write elsewhere (out_dir=PATH)",
    errno.EDQUOT: "free space within your quota, or write elsewhere (out_dir=PATH)",
    errno.EFBIG: "the file-size limit (ulimit -f) was reached: raise it, or write elsewhere",
    errno.EROFS: "that file system is read-only: choose a writable folder (out_dir=PATH)",
    errno.EACCES: "no permission there: choose a folder you can write (out_dir=PATH) or fix its permissions",
    errno.EPERM: "no permission there: choose a folder you can write (out_dir=PATH) or fix its permissions",
    errno.ENOTDIR: "a part of that path is a file, not a folder: choose another path",
    errno.EISDIR: "that path is a folder where a file was expected: choose another path",
}


def describe_os_error(err: OSError) -> str:
    """One line for an operating-system error: the file, what happened, the way out."""
    where = f"{err.filename}: " if err.filename else ""
    what = err.strerror or str(err)
    if err.filename is None and err.strerror is None:  # e.g. CheckpointWriteError: its message says it all
        return str(err.args[-1]) if err.args else str(err)
    fix = _OS_FIXES.get(err.errno or 0)
    return f"{where}{what}" + (f". Fix: {fix}" if fix else "")


def processor_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name as the operating system reports it (``model name`` in Linux's ``/proc/cpuinfo``,
    e.g. ``AMD EPYC 9R14 96-Core Processor``), else ``platform.processor()``, else the architecture."""
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or f"{platform.machine()} CPU"


def cuda_device_name() -> str:
    """The first CUDA device and the CUDA version torch was built with, e.g. ``NVIDIA H100 (CUDA 12.4)``."""
    return f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"


def machine_name() -> str:
    """The machine a result was measured on, for reports: the GPU where CUDA is present, else the CPU's model
    name and its core count; with the torch version."""
    device = cuda_device_name() if torch.cuda.is_available() else f"{processor_name()}, {os.cpu_count()} cores"
    return f"{device}; torch {torch.__version__}"


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 120, rect: tuple[float, ...] | None = None) -> None:
    """Save and close a matplotlib figure with no title cut: the figure's title and each panel's title are
    wrapped onto more lines where they are wider than the figure or the panel, the panels laid out
    (``tight_layout``, within ``rect``), and the file cropped to everything drawn (``bbox_inches="tight"``)."""
    import textwrap

    import matplotlib.pyplot as plt

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [(getattr(fig, "_suptitle", None), fig.bbox.width)]
    texts += [(t, ax.bbox.width) for ax in fig.axes for t in (ax.title, ax._left_title, ax._right_title)]
    for text, room in texts:
        if text is None or not text.get_text():
            continue
        width = text.get_window_extent(renderer).width
        if width > room:  # each line wrapped on its own (a title's line breaks are kept)
            lines = text.get_text().split("\n")
            fits = max(12, int(0.95 * max(len(line) for line in lines) * room / width))
            text.set_text("\n".join(textwrap.fill(" ".join(line.split()), fits) for line in lines))
    fig.tight_layout(**({"rect": rect} if rect else {}))
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
