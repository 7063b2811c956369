"""Exported encoders: reading one back, checked, without running anything from disk.

``localssl export RUN`` (:mod:`localssl.export`) writes a run's encoder as a safetensors file named
``NAME-<sha256 prefix>.safetensors`` (the torch.hub convention) with its model card beside it
(``NAME-<prefix>.json`` and ``.md``). The file holds the weights and, in its header's ``__metadata__``, what is
needed to rebuild and read out the network (the resolved config, the encoder's input shape, the dataset's
normalisation and pooling), so it loads without the run or the data.

Loading (:func:`read_exported`) reads the file's bytes once, checks them and only then parses them:

* the name must end with ``-<hex>.safetensors`` whose hex (8 digits or more) starts the file's sha256, and
  begin with the name the file was exported under; a card beside it must give the same full sha256. A renamed,
  truncated or edited file is refused with one line;
* the tensors are parsed by ``safetensors`` from those bytes: no ``torch.load``, no pickle, no code.

:func:`load_encoder` gives the encoder in eval mode, frozen; :func:`features` reads images out exactly as
``localssl probe`` does (every layer pooled with the dataset's kernels, concatenated). Shipped encoders live in
the package's ``weights/`` folder (or ``$LOCALSSL_WEIGHTS``) and are loaded by name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import struct
from pathlib import Path
from typing import Any

import torch

from localssl.safe_files import read_bytes, read_text

WEIGHTS_LIMIT = 16 << 30  # an exported encoder: MB at CPU scale, a few GB at paper scale

FORMAT = "localssl-encoder/1"
METADATA_KEY = "localssl"
HASH_CHARS = 12  # hex digits of the sha256 in the file name (torch.hub checks any prefix of 8 or more)
SUFFIX = ".safetensors"
FILE_NAME = re.compile(r"^(?P<name>.+)-(?P<hash>[0-9a-f]{8,64})\.safetensors$")
NAME = re.compile(r"^[A-Za-z0-9_+][A-Za-z0-9_+-]*$")  # no '.': torch.hub finds the hash as the first '-<hex>.'
SHIPPED_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # a shipped encoder's name is its hub entry
PACKAGE_WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


class WeightsError(ValueError):
    """An exported encoder that cannot be used (wrong name, hash mismatch, not a localssl export): one line."""


def weights_dir() -> Path:
    """The folder of shipped encoders: ``$LOCALSSL_WEIGHTS`` if set, else the package's ``weights/``."""
    env = os.environ.get("LOCALSSL_WEIGHTS")
    return Path(env).expanduser() if env else PACKAGE_WEIGHTS


def file_name(name: str, sha256: str) -> str:
    """``NAME-<first HASH_CHARS hex of sha256>.safetensors``."""
    return f"{name}-{sha256[:HASH_CHARS]}{SUFFIX}"


def card_paths(weights: Path) -> tuple[Path, Path]:
    """The model card's JSON and Markdown files beside ``weights`` (same stem)."""
    stem = weights.with_suffix("")
    return stem.with_suffix(".json"), stem.with_suffix(".md")


@dataclasses.dataclass
class Exported:
    """A verified exported encoder: its file, name, full sha256, header metadata, tensors and card (if beside)."""

    path: Path
    name: str
    sha256: str
    info: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    card: dict[str, Any] | None

    def config(self, overrides: list[str] | None = None) -> Any:
        """The run's resolved config (a :class:`~localssl.config.RunConfig`), with ``overrides`` applied."""
        from localssl.config import config_from_dict, merge, parse_overrides

        return config_from_dict(merge(self.info["config"], parse_overrides(overrides or [])))

    def meta(self) -> dict[str, Any]:
        """What a probe records of the weights it read (as :func:`~localssl.checkpoint.checkpoint_meta` does)."""
        return {
            "checkpoint": self.path.name,
            "checkpoint_epoch": int(self.info["epoch"]),
            "checkpoint_step": int(self.info["global_step"]),
            "checkpoint_mid_epoch_step": self.info.get("mid_epoch_step"),
            "weights_sha256": self.sha256,
            "weights_dtype": self.info["dtype"],
        }


def _header(data: bytes, path: Path) -> dict[str, Any]:
    """The safetensors header (JSON) of ``data``, parsed by hand: only its ``__metadata__`` is needed here."""
    if len(data) < 8:
        raise WeightsError(f"{path} is not a safetensors file ({len(data)} bytes); export the run again")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise WeightsError(f"{path} is cut short (its header needs {n} bytes); download or export it again")
    try:
        header = json.loads(data[8 : 8 + n])
    except (UnicodeDecodeError, ValueError):
        raise WeightsError(f"{path} has no readable safetensors header; download or export it again") from None
    if not isinstance(header, dict):
        raise WeightsError(f"{path} has no readable safetensors header; download or export it again")
    return header


def read_exported(path: str | os.PathLike) -> Exported:
    """Read and verify an exported encoder (see the module's docstring); raises :class:`WeightsError`."""
    from safetensors import SafetensorError
    from safetensors.torch import load as load_safetensors

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; give an exported .safetensors file, or export a run first")
    match = FILE_NAME.match(path.name)
    if match is None:
        raise WeightsError(
            f"{path.name} is not named NAME-<sha256 prefix>{SUFFIX} as `localssl export` names it, so its content "
            "cannot be checked; rename it back to the name it was exported with"
        )
    data = read_bytes(path, WEIGHTS_LIMIT)  # a regular file only (no link to a device or a pipe), bounded
    digest = hashlib.sha256(data).hexdigest()
    if not digest.startswith(match["hash"]):
        raise WeightsError(
            f"{path} does not match the hash in its name (sha256 {digest[:HASH_CHARS]}..., name says "
            f"{match['hash']}): the file is corrupt, cut short or edited; download or export it again"
        )
    card_json = card_paths(path)[0]
    card = None
    if card_json.is_file():
        try:
            card = json.loads(read_text(card_json))
        except (OSError, UnicodeDecodeError, ValueError):
            raise WeightsError(f"{card_json} is not readable JSON; restore the model card or remove it") from None
        if not isinstance(card, dict) or card.get("sha256") != digest:
            raise WeightsError(
                f"{path} does not match the sha256 its model card {card_json.name} records: the file or the card was "
                "replaced or edited; download or export both again"
            )
    meta = _header(data, path).get("__metadata__") or {}
    try:
        info = json.loads(meta.get(METADATA_KEY, "null"))
    except ValueError:
        info = None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise WeightsError(f"{path} is a safetensors file but not an encoder exported by localssl ({FORMAT})")
    if info.get("name") != match["name"]:
        raise WeightsError(
            f"{path.name} was exported as '{info.get('name')}' and renamed; rename it back to "
            f"{info.get('name')}-{match['hash']}{SUFFIX}"
        )
    try:
        tensors = load_safetensors(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise WeightsError(f"{path} holds unreadable tensors ({exc}); download or export it again") from None
    return Exported(path, match["name"], digest, info, tensors, card)


def shipped() -> dict[str, Path]:
    """The shipped encoders: name -> weights file, from the model cards in :func:`weights_dir`."""
    folder = weights_dir()
    out: dict[str, Path] = {}
    for card_file in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            card = json.loads(read_text(card_file))
        except (OSError, UnicodeDecodeError, ValueError):
            continue  # read_exported names a broken card when its encoder is loaded
        if not isinstance(card, dict) or card.get("format") != FORMAT:
            continue
        name = str(card.get("name"))
        match = FILE_NAME.match(str(card.get("file")))
        if match is None or match["name"] != name or card_file.stem != Path(str(card.get("file"))).stem:
            continue  # a card must sit beside its own file (a plain name in this folder, never a path elsewhere)
        if name in out:
            raise WeightsError(
                f"{folder} ships two encoders named '{name}' ({out[name].name}, {card.get('file')}); "
                "ship it again with `localssl export RUN --ship NAME`, which removes the older one"
            )
        out[name] = folder / str(card.get("file"))
    return out


def resolve(source: str | os.PathLike) -> Path:
    """The weights file of ``source``: an existing file as it is, else the shipped encoder of that name."""
    path = Path(source)
    if path.is_file():
        return path
    if path.is_dir():
        raise WeightsError(f"{path} is a folder; give an exported {SUFFIX} file (export a run: localssl export RUN)")
    available = shipped()
    if str(source) in available:
        return available[str(source)]
    names = ", ".join(sorted(available)) or f"none in {weights_dir()}"
    raise FileNotFoundError(f"{source}: no such file and no shipped encoder of that name (shipped: {names})")


def is_exported(source: str | os.PathLike) -> bool:
    """Whether ``source`` names exported weights (a ``.safetensors`` file, or a shipped name) rather than a run."""
    path = Path(source)
    if path.exists():
        return path.is_file() and path.suffix == SUFFIX
    return str(source) in shipped()


def build_exported(exported: Exported, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """The encoder of ``exported``: built from its config, its weights loaded (strictly), eval mode, frozen."""
    from localssl.registry import MODELS

    cfg = exported.config()
    encoder = MODELS.get(cfg.model.name).builder(cfg.model, in_channels=int(exported.info["input_shape"][0]))
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in exported.tensors.items()}
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise WeightsError(f"{exported.path} does not fit the network its config builds ({first})") from None
    encoder.to(dtype).eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    encoder.exported = exported  # the card, config and read-out settings travel with the encoder
    return encoder


def initial_encoder(exported: Exported) -> torch.nn.Module:
    """The network of ``exported`` at its initialisation: the weights its run started from (the run's
    ``train.seed``; the encoder is the first thing a run builds), eval mode, frozen. The global random
    state is left as it was."""
    from localssl.registry import MODELS

    cfg = exported.config()
    net = build_exported(exported)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        fresh = MODELS.get(cfg.model.name).builder(cfg.model, in_channels=int(exported.info["input_shape"][0]))
    net.load_state_dict(fresh.state_dict())
    return net


def load_encoder(source: str | os.PathLike) -> torch.nn.Module:
    """``localssl.load_encoder(NAME | PATH)``: a shipped encoder by name or an exported file by path, its hash
    checked, as the float32 :class:`~localssl.models.base.LayeredEncoder` it was trained as (a bf16 export is
    widened), in eval mode with gradients off; ``encoder.exported`` holds its card and config. Read images out
    with :func:`features`."""
    return build_exported(read_exported(resolve(source)))


@torch.no_grad()
def features(
    encoder: torch.nn.Module, images: torch.Tensor, layers: str = "all", batch_size: int = 256
) -> torch.Tensor:
    """The probe's features of ``images`` (uint8 or float in [0, 1], ``(N, C, H, W)``) through an encoder from
    :func:`load_encoder`: each chosen layer (``'all'`` or ``'4,5,6'``) average-pooled with the dataset's
    kernels, flattened and concatenated, in float32 on the CPU, as ``localssl probe`` computes them (without its
    autocast), on the device the encoder is on."""
    from localssl.evaluate.features import FeatureExtractor, parse_layers
    from localssl.views.base import Normalize

    exported = getattr(encoder, "exported", None)
    if not isinstance(exported, Exported):
        raise WeightsError("features() reads out an encoder from localssl.load_encoder(NAME | PATH)")
    readout = exported.info["readout"]
    if readout.get("kind") != "pooled":
        raise WeightsError(
            f"{exported.path.name} is read out by its views ({readout.get('kind')}); "
            "probe it with `localssl probe FILE`"
        )
    kernels = readout["pool_kernels"] or []
    kernels = kernels if len(kernels) == len(encoder) else [None] * len(encoder)  # as the probe pools
    normalize = Normalize(readout["mean"], readout["std"])
    extractor = FeatureExtractor(encoder, normalize, kernels, parse_layers(layers, len(encoder)))
    return extractor.to(next(encoder.parameters()).device).extract(images, batch_size=batch_size)
