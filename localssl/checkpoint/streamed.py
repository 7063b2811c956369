"""Writing a checkpoint whose tensors are not all in memory at once (:func:`write_streamed`).

Rank 0 of a layer-parallel run saves one file that holds every stage's state. Holding the other stages' tensors
and a serialised copy of the whole next to its own would make rank 0's peak the whole model's; here it holds
neither. The state is saved with ``torch.serialization.skip_data`` (torch's own format: the pickle and every
storage's record, the records left empty), the file is mapped back (``mmap``: nothing read) to find where each
tensor's record lies, and then each record is filled with ``os.pwrite``: the tensors in memory straight from
their storage, the *late* ones (placeholders standing for another stage's tensors) one at a time, each produced
(received) just before it is written and dropped after. The file is the one ``torch.save`` writes, byte for byte
in every record."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

Late = list[tuple[torch.Tensor, Callable[[], torch.Tensor]]]


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    """The tensors of a state (nested dicts, lists, tuples), in order."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


def _storage_bytes(t: torch.Tensor) -> Any:
    """The bytes of ``t``'s whole storage (what torch writes as its record), on the CPU, without a copy there."""
    storage = t.untyped_storage()
    if storage.device.type != "cpu":
        storage = storage.cpu()
    whole = torch.empty(0, dtype=torch.uint8).set_(storage, 0, (storage.nbytes(),), (1,))
    return whole.numpy()


def _pwrite(fd: int, data: Any, offset: int) -> None:
    view = memoryview(data).cast("B")
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def write_streamed(state: dict[str, Any], fd: int, path: Path, late: Late) -> None:
    """Write ``state`` into the open file ``fd`` (at ``path``) in ``torch.save``'s format; every placeholder of
    ``late`` (a tensor of ``state``, in the order given) is written as the tensor its function returns (same
    shape, dtype and layout), produced only when its record is due."""
    try:
        with torch.serialization.skip_data():
            torch.save(state, str(path))
    except RuntimeError as exc:  # torch's zip writer: the disk refused it (full, size limit)
        raise OSError(f"writing {path}: {str(exc).splitlines()[0]}") from exc
    mapped = torch.load(str(path), mmap=True, weights_only=True, map_location="cpu")
    with open(path, "rb") as fh:
        reader = torch._C.PyTorchFileReader(fh)
        offsets = {reader.get_record_offset(n) for n in reader.get_all_records() if n.startswith("data/")}
    # every storage is a slice of one mapping of the file: its address minus the mapping's is its record's offset
    pairs = [(t, m) for t, m in zip(_tensors(state), _tensors(mapped), strict=True) if m.untyped_storage().nbytes()]
    first = min(m.untyped_storage().data_ptr() for _, m in pairs) if pairs else 0
    where: dict[int, int] = {}
    for anchor in sorted(offsets):  # the first record with bytes (records of empty tensors may come before it)
        where = {id(t): m.untyped_storage().data_ptr() - first + anchor for t, m in pairs}
        if set(where.values()) <= offsets:
            break
    else:
        if pairs:
            raise RuntimeError(f"{path}: the tensors do not map onto the file's records")
    del mapped, pairs
    placeholders = {id(p) for p, _ in late}
    written: set[int] = set()
    for t in _tensors(state):
        if id(t) in where and id(t) not in placeholders and where[id(t)] not in written:
            _pwrite(fd, _storage_bytes(t), where[id(t)])
            written.add(where[id(t)])
    for placeholder, produce in late:
        t = produce()
        if t.shape != placeholder.shape or t.dtype != placeholder.dtype or t.stride() != placeholder.stride():
            raise RuntimeError(f"a late tensor came as {tuple(t.shape)} {t.dtype}, expected {tuple(placeholder.shape)}")
        if id(placeholder) in where:
            _pwrite(fd, _storage_bytes(t), where[id(placeholder)])
        del t
