"""torch.hub entry points of localssl: ``torch.hub.load(REPO, NAME, pretrained=True)``.

One entry per shipped encoder, made from the model cards in ``localssl/weights/`` (or ``$LOCALSSL_WEIGHTS``)
when this file is imported: ``pretrained=True`` loads the shipped file (its sha256 checked; fetched from the
card's ``url`` with the hash in its name checked when the file is not in the clone and the card gives one),
``pretrained=False`` the same network at its initialisation (the run's seed). ``encoder(path=FILE)`` loads
any file written by ``localssl export``. Each returns the encoder in eval mode, frozen; read images out with
``localssl.features(encoder, images)``. No entry reads a pickle: the files are safetensors.

    import torch
    encoder = torch.hub.load(CLONE, "clapp_pp_cifar10", source="local", pretrained=True)  # the shipped CLAPP++ record
    encoder = torch.hub.load(CLONE, "encoder", source="local", path="clapp++-0123456789ab.safetensors")

(``torch.hub.list`` and ``torch.hub.help`` read GitHub repositories only; in a clone, the entries are this
module's public functions.)
"""

from __future__ import annotations

import json
from collections.abc import Callable as _Callable
from pathlib import Path as _Path

import torch

from localssl.evaluate import pretrained as _pretrained

dependencies = ["torch", "safetensors", "yaml", "numpy", "kornia", "PIL", "tqdm"]  # modules a load imports


def encoder(path: str, pretrained: bool = True) -> torch.nn.Module:
    """Any encoder written by ``localssl export``: ``path`` to its ``NAME-<sha256 prefix>.safetensors`` (the hash
    is checked), or a shipped encoder's name. ``pretrained=False``: the same network at its initialisation."""
    return _load(_Path(path), pretrained, None)


def _load(path: _Path, pretrained: bool, url: str | None) -> torch.nn.Module:
    if not path.is_file() and url:  # a shipped file kept out of the clone: fetch it, its hash checked by name
        folder = _Path(torch.hub.get_dir()) / "checkpoints"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / path.name
        if not target.is_file():
            prefix = path.name.rsplit("-", 1)[-1].split(".")[0]
            torch.hub.download_url_to_file(url, str(target), hash_prefix=prefix)
        path = target
    exported = _pretrained.read_exported(_pretrained.resolve(path))
    return _pretrained.build_exported(exported) if pretrained else _pretrained.initial_encoder(exported)


def _entry(name: str, path: _Path) -> _Callable[..., torch.nn.Module]:
    card_file = _pretrained.card_paths(path)[0]
    card = json.loads(card_file.read_text())
    probe = card.get("probe") or {}
    base = card.get("random_init") or {}

    def entry(pretrained: bool = True) -> torch.nn.Module:
        return _load(path, pretrained, card.get("url"))

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = (
        f"{card.get('preset')} encoder ({card['model'].get('name')} at width {card['model'].get('width')}), trained "
        f"{card['training'].get('steps')} steps on {card['data'].get('name')}; probe test accuracy "
        f"{probe.get('test_acc_pct', '–')} % (random init of the same network: "
        f"{base.get('test_acc_pct', '–')} %). "
        f"File {card.get('file')}, sha256 {card.get('sha256')}; card {card_file.name}. "
        "pretrained=False: the same network at its initialisation."
    )
    return entry


for _name, _path in _pretrained.shipped().items():
    globals()[_name] = _entry(_name, _path)
