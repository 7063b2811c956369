"""Common pieces of the dataset readers: the in-memory image set, errors and the decode cache."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from localssl.safe_files import check_file, open_read, remove_dead_temporaries, temporary_beside, umask_mode


class DatasetError(RuntimeError):
    """A dataset that is missing or unreadable; the message names the path and the fix."""


@dataclasses.dataclass
class ImageData:
    """A whole split held in memory: ``images`` uint8 (N, C, H, W), ``labels`` int64 (N,), -1 = none."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DatasetError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if len(self.labels) != len(self.images):
            raise DatasetError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: torch.Tensor) -> ImageData:
        return ImageData(self.images[index], self.labels[index], self.classes)

    @staticmethod
    def concat(parts: list[ImageData]) -> ImageData:
        return ImageData(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]), parts[0].classes)


def cache_dir() -> Path:
    return Path(os.environ.get("LOCALSSL_CACHE", Path.home() / ".cache" / "localssl")).expanduser()


DECODE_VERSION = 2  # bump when decoding changes (2: suffix-chosen decoders, 16-bit/float/alpha rules)


def walk_files(root: Path, skip_hidden: bool = False) -> list[Path]:
    """Every file under the folder ``root``, sorted by relative path, following symbolic links.

    A linked folder is read like a real one (a folder linked twice is read twice); a link to a folder
    that contains it (a loop), a broken link and anything that is neither a file nor a folder (a socket,
    a pipe) are errors naming the path. ``skip_hidden``: leave out names starting with ``.`` (and all
    under such folders), e.g. ``.DS_Store``, ``.ipynb_checkpoints/``.
    """
    out: list[Path] = []

    def visit(folder: Path, ancestors: frozenset[Path], link: Path | None) -> None:
        link = folder if folder.is_symlink() else link  # the deepest link on the way here
        real = folder.resolve()
        if real in ancestors:
            raise DatasetError(
                f"{link} is a symbolic link to {link.resolve() if link else real}, and following it leads back "
                "into a folder that is already being read (a loop of symbolic links); remove the link or point "
                "it at a folder outside its own tree"
            )
        for entry in sorted(folder.iterdir()):
            if skip_hidden and entry.name.startswith("."):
                continue
            if entry.is_dir():
                visit(entry, ancestors | {real}, link)
            elif entry.is_file():
                out.append(entry)
            elif entry.is_symlink():
                raise DatasetError(
                    f"{entry} is a broken symbolic link (to {os.readlink(entry)}); restore its target or remove it"
                )
            else:
                raise DatasetError(f"{entry} is neither a file nor a folder (a socket or pipe?); move it out of {root}")

    visit(root, frozenset(), None)
    return out


def manifest_key(source: Path, split: str) -> str:
    """Hash of the manifest of ``source``: (relative path, size, mtime) of every file under it.

    A directory's own mtime does not change when a file deep inside it is added or rewritten, so the
    key lists every file (symbolic links followed, see :func:`walk_files`); an added, removed, changed or
    corrupted image gives a new key and is read again (a corrupt one then fails decoding with its name).
    A ``.zip`` is one file. :data:`DECODE_VERSION` is part of the key, so a change of decoding rules
    never serves arrays decoded by the old ones.
    """
    digest = hashlib.sha1(f"{source.resolve()}|{split}|decode-v{DECODE_VERSION}".encode())
    files = walk_files(source) if source.is_dir() else [source]
    for path in files:
        st = path.stat()
        digest.update(
            f"\n{path.relative_to(source) if source.is_dir() else path.name}|{st.st_size}|{st.st_mtime_ns}".encode()
        )
    return digest.hexdigest()[:16]


def cached_decode(source: Path, split: str, decode: Callable[[], ImageData]) -> ImageData:
    """Decode once, then reuse ``.npz`` in :func:`cache_dir` keyed by :func:`manifest_key`.

    The cache is written atomically (a temporary file of this process, then rename; the file gets the umask's
    permissions) and read with ``np.load(allow_pickle=False)``, so loading it never executes code; only a regular
    file is read (:mod:`localssl.safe_files`: a link or special file there is refused by name). A temporary left
    by a killed process, or by a full disk, is removed by the next decode.
    """
    key = manifest_key(source, split)
    path = cache_dir() / f"{source.name}-{split}-{key}.npz"
    if path.parent.is_dir():
        remove_dead_temporaries(path.parent, ".*.tmp")
    if check_file(path):
        try:
            with open_read(path) as fh, np.load(fh, allow_pickle=False) as z:
                return ImageData(
                    torch.from_numpy(z["images"]), torch.from_numpy(z["labels"]), [str(c) for c in z["classes"]]
                )
        except Exception:  # noqa: BLE001 - a broken cache file is rebuilt below
            path.unlink(missing_ok=True)
    data = decode()
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = temporary_beside(path)
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, images=data.images.numpy(), labels=data.labels.numpy(), classes=np.array(data.classes))
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
        tmp = None
    except OSError:
        pass  # a read-only home or a full disk: decoding again next time is fine
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    return data
