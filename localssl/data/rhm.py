"""The Random Hierarchy Model (Cagnetta, Petrini, Tomasini, Favero & Wyart, PRX 14, 031001, 2024).

A class label (the root, *level 0*) generates ``s`` features of level 1 through one of ``m`` production
rules drawn for that class; each level-1 feature generates ``s`` features of level 2 through one of
its own ``m`` rules, and so on down to level ``L``, whose ``s^L`` features are the input tokens. Every
class and every feature of a level owns ``m`` distinct ``s``-tuples of the level below, and at each
level all those tuples are distinct (drawn without replacement from the ``v^s`` possible tuples), so a
tuple determines its parent: the grammar is unambiguous. The ``m`` tuples of one feature are its
*synonyms*. An input is a label plus one rule choice (a digit in ``0..m-1``) per internal node of the
tree, hence

    Pmax = n_c · m^((s^L − 1)/(s − 1))        distinct inputs,
    P*   = n_c · m^L                          samples a deep CNN needs (Cagnetta et al. Sec. V).

Samples are addressed by an integer ``0 <= i < Pmax`` (label, then the rule choices of every node,
level by level, in base ``m``), so any subset of the ``Pmax`` inputs is built without materialising the
others, train and test draws are disjoint by construction, and the hidden features of every level
come with each input (:meth:`RandomHierarchyModel.features`).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

INDEX_LIMIT = 2**62  # integer indices are int64; larger Pmax would overflow the index arithmetic
_PERMUTE_LIMIT = 2**22  # up to this Pmax, splits come from one seeded permutation of all indices


class RHMError(ValueError):
    """Impossible or unsupported RHM parameters; the message names the constraint and the fix."""


@dataclasses.dataclass(frozen=True)
class RHMParams:
    """Vocabulary ``v``, classes ``n_c``, multiplicity ``m``, branching ``s``, depth ``L``."""

    v: int = 8
    n_c: int = 8
    m: int = 4
    s: int = 2
    L: int = 3

    def __post_init__(self) -> None:
        for name in ("v", "n_c", "m", "s", "L"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise RHMError(f"RHM parameter {name} must be a positive integer, got {value!r}")
        if self.s < 2:
            raise RHMError(f"the RHM needs tuples of s >= 2 features (s={self.s} gives no hierarchy)")
        if self.n_c < 2:
            raise RHMError(f"the RHM needs at least 2 classes, got n_c={self.n_c}")
        tuples = self.v**self.s
        if self.L > 1 and tuples < self.m * self.v:
            raise RHMError(
                f"impossible RHM: each of the v={self.v} features needs m={self.m} distinct {self.s}-tuples, "
                f"m·v={self.m * self.v} > v^s={tuples}; lower m or raise v or s"
            )
        if tuples < self.m * self.n_c:
            raise RHMError(
                f"impossible RHM: each of the n_c={self.n_c} classes needs m={self.m} distinct {self.s}-tuples, "
                f"m·n_c={self.m * self.n_c} > v^s={tuples}; lower m or n_c, or raise v or s"
            )

    @property
    def n_nodes(self) -> int:
        """Internal nodes of the tree (levels 0..L−1), each holding one rule choice."""
        return (self.s**self.L - 1) // (self.s - 1)

    @property
    def pmax(self) -> int:
        """Number of distinct inputs, ``n_c · m^((s^L−1)/(s−1))`` (exact Python integer)."""
        return self.n_c * self.m**self.n_nodes

    @property
    def p_star(self) -> int:
        """Sample complexity of deep CNNs, ``P* = n_c · m^L`` (Cagnetta et al. 2024)."""
        return self.n_c * self.m**self.L

    @property
    def input_length(self) -> int:
        return self.s**self.L


def distinct_integers(n: int, high: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` distinct integers from ``[0, high)``, uniformly, without listing all of them."""
    if n > high:
        raise RHMError(f"cannot draw {n} distinct values out of {high}")
    if high <= _PERMUTE_LIMIT:
        return torch.randperm(high, generator=generator)[:n]
    return _stream(n, high, generator, exclude=set())


def _stream(n: int, high: int, generator: torch.Generator, exclude: set[int]) -> torch.Tensor:
    """The first ``n`` distinct values (not in ``exclude``) of a seeded stream of uniform draws.

    The stream does not depend on ``n``: a larger ``n`` extends a smaller one (nested sets)."""
    seen: set[int] = set()
    out: list[int] = []
    while len(out) < n:
        for value in torch.randint(0, high, (4096,), generator=generator, dtype=torch.int64).tolist():
            if value not in seen and value not in exclude:
                seen.add(value)
                out.append(value)
                if len(out) == n:
                    break
    return torch.tensor(out, dtype=torch.int64)


class RandomHierarchyModel:
    """A seeded RHM: its production rules, and inputs addressed by integer index.

    ``rules[l]`` has shape ``(n_l, m, s)`` with ``n_0 = n_c`` and ``n_l = v`` for ``l >= 1``: row ``a`` lists
    the ``m`` tuples (synonyms) that feature ``a`` of level ``l`` produces at level ``l + 1``.
    """

    def __init__(self, params: RHMParams, seed: int = 0) -> None:
        self.params = params
        self.seed = seed
        p = params
        if p.pmax > INDEX_LIMIT:
            raise RHMError(
                f"Pmax = n_c·m^((s^L−1)/(s−1)) = {p.pmax:.3g} exceeds the int64 index range ({INDEX_LIMIT:.3g}); "
                "lower m, s or L"
            )
        g = torch.Generator().manual_seed(seed)
        self.rules: list[torch.Tensor] = []
        for level in range(p.L):
            n_parents = p.n_c if level == 0 else p.v
            codes = distinct_integers(n_parents * p.m, p.v**p.s, g)
            self.rules.append(self._tuples(codes).reshape(n_parents, p.m, p.s))

    def _tuples(self, codes: torch.Tensor) -> torch.Tensor:
        """Integer codes ``< v^s`` -> their base-``v`` digits (most significant first), shape (K, s)."""
        v, s = self.params.v, self.params.s
        powers = v ** torch.arange(s - 1, -1, -1, dtype=torch.int64)
        return (codes[:, None] // powers) % v

    # ------------------------------------------------------------------ indices <-> rule choices
    def decode(self, index: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Index -> (labels (N,), choices) with ``choices[l]`` of shape (N, s^l): the rule used by each
        node of level ``l``. Digit order: label, then nodes level by level, left to right."""
        p = self.params
        index = torch.as_tensor(index, dtype=torch.int64)
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= p.pmax):
            raise RHMError(f"RHM indices must lie in [0, Pmax={p.pmax}), got [{int(index.min())}, {int(index.max())}]")
        digits = []
        rest = index.clone()
        for _ in range(p.n_nodes):
            digits.append(rest % p.m)
            rest = rest // p.m
        labels = rest
        flat = torch.stack(digits[::-1], dim=1) if digits else index.new_zeros((len(index), 0))
        choices, start = [], 0
        for level in range(p.L):
            width = p.s**level
            choices.append(flat[:, start : start + width])
            start += width
        return labels, choices

    def encode(self, labels: torch.Tensor, choices: list[torch.Tensor]) -> torch.Tensor:
        """Inverse of :meth:`decode`."""
        p = self.params
        index = labels.to(torch.int64).clone()
        for level in range(p.L):
            for j in range(p.s**level):
                index = index * p.m + choices[level][:, j]
        return index

    # ------------------------------------------------------------------ inputs and hidden features
    def features(self, index: torch.Tensor) -> list[torch.Tensor]:
        """Hidden features of every level: a list of L+1 tensors, ``[l]`` of shape (N, s^l);
        ``[0]`` holds the labels and ``[L]`` the input tokens."""
        labels, choices = self.decode(index)
        return self.expand(labels, choices)

    def expand(self, labels: torch.Tensor, choices: list[torch.Tensor]) -> list[torch.Tensor]:
        levels = [labels[:, None]]
        for level in range(self.params.L):
            # rules[level][feature, choice] is an s-tuple: (N, s^l, s) -> (N, s^(l+1))
            levels.append(self.rules[level][levels[-1], choices[level]].flatten(1))
        return levels

    def tokens(self, index: torch.Tensor) -> torch.Tensor:
        """Input tokens (N, s^L), integers in ``0..v-1``."""
        return self.features(index)[-1]

    def labels(self, index: torch.Tensor) -> torch.Tensor:
        return self.decode(index)[0]

    def inputs(self, index: torch.Tensor, whiten: bool = False) -> torch.Tensor:
        """One-hot inputs, channels first: (N, v, s^L) float (see :func:`one_hot`)."""
        return one_hot(self.tokens(index), self.params.v, whiten)

    # ------------------------------------------------------------------ splits and resampling
    def split(self, n_train: int, n_test: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Disjoint train and test indices. The test set depends only on ``(n_test, seed)``, and the
        train sets are nested: the first ``P`` of a larger draw are the draw of size ``P``."""
        pmax = self.params.pmax
        if n_train < 0 or n_test < 0:
            raise RHMError(f"n_train and n_test must be >= 0, got {n_train} and {n_test}")
        if n_train + n_test > pmax:
            raise RHMError(
                f"this RHM has only Pmax={pmax} distinct inputs, fewer than n_train + n_test = {n_train + n_test}; "
                "lower them or raise m or L"
            )
        g = torch.Generator().manual_seed(seed)
        if pmax <= _PERMUTE_LIMIT:
            perm = torch.randperm(pmax, generator=g)
            return perm[n_test : n_test + n_train].clone(), perm[:n_test].clone()
        test = _stream(n_test, pmax, g, exclude=set())
        train = _stream(n_train, pmax, torch.Generator().manual_seed(seed + 1), exclude=set(test.tolist()))
        return train, test

    def resample_below(self, index: torch.Tensor, level: int, generator: torch.Generator) -> torch.Tensor:
        """Keep the label and the features of levels ``<= level``; draw every rule choice of the levels
        ``>= level`` anew (a *synonymic* version of the input at that level)."""
        p = self.params
        if not 0 <= level <= p.L:
            raise RHMError(f"level must lie in 0..L={p.L}, got {level}")
        labels, choices = self.decode(index)
        choices = [
            torch.randint(0, p.m, c.shape, generator=generator, dtype=torch.int64) if lvl >= level else c
            for lvl, c in enumerate(choices)
        ]
        return self.encode(labels, choices)

    def __repr__(self) -> str:
        p = self.params
        return (
            f"RandomHierarchyModel(v={p.v}, n_c={p.n_c}, m={p.m}, s={p.s}, L={p.L}, seed={self.seed}; "
            f"Pmax={p.pmax}, P*={p.p_star})"
        )


def one_hot(tokens: torch.Tensor, v: int, whiten: bool = False) -> torch.Tensor:
    """Tokens (N, T) -> (N, v, T) float, channels first. ``whiten``: ``(x − 1/v)/sqrt(1 − 1/v)``, zero
    mean over the vocabulary and unit norm at every position (the whitened input of Cagnetta et al.)."""
    x = F.one_hot(tokens.long(), v).permute(0, 2, 1).float()
    if whiten:
        x = (x - 1.0 / v) / math.sqrt(1.0 - 1.0 / v)
    return x
