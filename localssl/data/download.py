"""``localssl data download NAME``: torchvision when installed, otherwise the exact commands."""

from __future__ import annotations

from pathlib import Path

from localssl.data.catalog import dataset_info


def manual_instructions(name: str, root: Path) -> str:
    info = dataset_info(name)
    lines = [f"# {name}: download into {root} with:", f"mkdir -p {root} && cd {root}"]
    for url in info.urls:
        fname = url.rsplit("/", 1)[-1]
        lines.append(f"wget -c {url}")
        if fname.endswith(".tar.gz"):
            lines.append(f"tar xzf {fname}")
        elif fname.endswith(".zip"):
            lines.append(f"unzip -q {fname}")
    if name == "mnist":
        lines.append("mkdir -p MNIST/raw && mv *-ubyte.gz MNIST/raw/")
    return "\n".join(lines)


class DownloadNotDone(RuntimeError):
    """Nothing was downloaded; the message holds the shell commands to run instead."""


def download(name: str, root: Path) -> str:
    """Download ``name`` into ``root``; returns a message. Without torchvision, offline, or for a
    dataset torchvision does not ship, raises :class:`DownloadNotDone` with the shell commands instead."""
    info = dataset_info(name)
    root.mkdir(parents=True, exist_ok=True)
    try:
        import torchvision.datasets as tvd  # type: ignore[import-not-found]
    except Exception:  # noqa: BLE001 - missing or broken torchvision
        raise DownloadNotDone(
            "torchvision is not installed (pip install 'localssl[download]'); run instead:\n"
            + manual_instructions(name, root)
        ) from None
    try:
        if name == "cifar10":
            tvd.CIFAR10(str(root), train=True, download=True)
        elif name == "mnist":
            tvd.MNIST(str(root), train=True, download=True)
            tvd.MNIST(str(root), train=False, download=True)
        elif name == "stl10":
            tvd.STL10(str(root), split="train+unlabeled", download=True)
        else:
            raise DownloadNotDone(
                f"torchvision does not ship {info.name}; run instead:\n" + manual_instructions(name, root)
            )
    except DownloadNotDone:
        raise
    except Exception as err:  # no network, checksum error, ...
        raise DownloadNotDone(
            f"download of {info.name} failed ({err}); run instead:\n" + manual_instructions(name, root)
        ) from err
    return f"{name} is in {root}"
