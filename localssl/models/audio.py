"""CPC / Greedy InfoMax audio encoder (van den Oord et al. 2018; Löwe et al. 2019), as used by CLAPP
(Illing et al. 2021, App. B.2), with a GRU trained by BPTT or by e-prop (App. C, Eqs. 15–18).

Hyper-parameters of GIM's audio model (``load_audio_model.py``, "original dimensions given in CPC"):
five ``Conv1d + ReLU`` layers on raw 16 kHz audio with 512 channels, kernel sizes 10, 8, 4, 4, 4,
strides 5, 4, 2, 2, 2 and paddings 2, 2, 2, 2, 1 (total stride 160: one vector per 10 ms), then one GRU
layer with 256 units (the autoregressive context network g_ar). A 20480-sample window gives
4095, 1023, 512, 257, 128 frames. CLAPP's text speaks of "four 1D convolutional layers"; its code for
audio is not public, so we follow GIM's code (five) — ``kernel_sizes`` etc. change it.

``width`` multiplies the conv channels and the GRU units (CPU runs).
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from localssl.models.base import LayeredEncoder
from localssl.registry import MODELS, ConfigError


@dataclasses.dataclass
class AudioCPCConfig:
    name: str = "cpc_audio"
    width: float = 1.0
    channels: int = 512
    gru_hidden: int = 256
    kernel_sizes: list[int] = dataclasses.field(default_factory=lambda: [10, 8, 4, 4, 4])
    strides: list[int] = dataclasses.field(default_factory=lambda: [5, 4, 2, 2, 2])
    paddings: list[int] = dataclasses.field(default_factory=lambda: [2, 2, 2, 2, 1])
    gru: bool = True  # append the GRU context layer
    eprop: bool = False  # GRU: e-prop (recurrent input detached at each step, Eqs. 15-18) instead of BPTT

    def __post_init__(self) -> None:
        if not (len(self.kernel_sizes) == len(self.strides) == len(self.paddings)) or not self.kernel_sizes:
            raise ConfigError("model.kernel_sizes, model.strides and model.paddings must be non-empty, equally long")
        if not self.width > 0:
            raise ConfigError(f"model.width must be > 0, got {self.width}")


class GRULayer(nn.Module):
    """A GRU over ``(B, C, T)`` returning ``(B, H, T)`` (PyTorch's gate equations and parameters).

    ``eprop=True`` blocks the gradient of the recurrent input inside the gates (Eqs. 15–17),
    ``r, z, n = gates(x_t, block_grad(h_{t-1}))`` while ``h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t−1}`` keeps its
    gradient (Eq. 18): the remaining dependence of ``h_t`` on the past is diagonal, so autodiff computes
    exactly e-prop's eligibility traces times the learning signal ∂E/∂h_t (Bellec et al. 2020).
    ``eprop=False`` is full backprop through time (the fused ``nn.GRU``)."""

    def __init__(self, input_size: int, hidden_size: int, eprop: bool = False) -> None:
        super().__init__()
        self.gru = nn.GRU(input_size, hidden_size, batch_first=True)
        self.eprop = eprop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.eprop:
            return self.gru(x.transpose(1, 2))[0].transpose(1, 2)
        g = self.gru
        h = x.new_zeros(x.shape[0], g.hidden_size)
        gi = torch.addmm(g.bias_ih_l0, x.transpose(1, 2).reshape(-1, x.shape[1]), g.weight_ih_l0.t())
        gi = gi.view(x.shape[0], x.shape[2], -1)  # input projections of every step at once
        outs = []
        for t in range(x.shape[2]):
            gh = torch.addmm(g.bias_hh_l0, h.detach(), g.weight_hh_l0.t())  # block_grad(h_{t-1})
            i_r, i_z, i_n = gi[:, t].chunk(3, dim=1)
            h_r, h_z, h_n = gh.chunk(3, dim=1)
            r = torch.sigmoid(i_r + h_r)
            z = torch.sigmoid(i_z + h_z)
            n = torch.tanh(i_n + r * h_n)
            h = (1 - z) * n + z * h
            outs.append(h)
        return torch.stack(outs, dim=2)


@MODELS.register("cpc_audio", AudioCPCConfig)
class AudioCPC(LayeredEncoder):
    """Conv layers (each one trainable layer) and, last, the GRU (an autoregressive layer: its loss uses
    its output as context and its input as target)."""

    def __init__(self, cfg: AudioCPCConfig, in_channels: int = 1) -> None:
        width = max(1, round(cfg.channels * cfg.width))
        layers: list[nn.Module] = []
        c_in = in_channels
        for k, s, p in zip(cfg.kernel_sizes, cfg.strides, cfg.paddings):
            layers.append(nn.Sequential(nn.Conv1d(c_in, width, k, stride=s, padding=p), nn.ReLU()))
            c_in = width
        if cfg.gru:
            layers.append(GRULayer(c_in, max(1, round(cfg.gru_hidden * cfg.width)), eprop=cfg.eprop))
        super().__init__(layers)
        self.autoregressive_layers = {len(layers) - 1} if cfg.gru else set()


# ------------------------------------------------------------------------------------------- MFCC
@dataclasses.dataclass
class MFCCConfig:
    """Mel-frequency cepstral coefficients per 10 ms (the MFCC row of CLAPP 2021 Table 1: 39.7 on LibriSpeech)."""

    name: str = "mfcc"
    n_coeffs: int = 13
    n_mels: int = 40
    n_fft: int = 512
    win_length: int = 400  # 25 ms at 16 kHz
    hop: int = 160  # 10 ms
    sample_rate: int = 16000
    width: float = 1.0  # no effect (nothing to widen); accepted so that a table sets one width for every row

    def __post_init__(self) -> None:
        if not 1 <= self.n_coeffs <= self.n_mels:
            raise ConfigError(f"model.n_coeffs must be in 1..model.n_mels={self.n_mels}, got {self.n_coeffs}")


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int) -> torch.Tensor:
    """``(n_mels, n_fft // 2 + 1)`` triangular filters equally spaced on the HTK mel scale, 0 Hz to Nyquist."""
    mel = torch.linspace(0.0, 2595.0 * math.log10(1 + sample_rate / 2 / 700.0), n_mels + 2, dtype=torch.float64)
    hz = 700.0 * (10 ** (mel / 2595.0) - 1)
    bins = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    lo, mid, hi = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    up, down = (bins - lo) / (mid - lo), (hi - bins) / (hi - mid)
    return torch.clamp(torch.minimum(up, down), min=0.0)


def dct_matrix(n_out: int, n_in: int) -> torch.Tensor:
    """``(n_out, n_in)`` orthonormal DCT-II (``scipy.fft.dct(x, norm='ortho')[:n_out]``)."""
    k = torch.arange(n_out, dtype=torch.float64)[:, None]
    n = torch.arange(n_in, dtype=torch.float64)[None]
    m = torch.cos(math.pi / n_in * (n + 0.5) * k) * math.sqrt(2.0 / n_in)
    m[0] /= math.sqrt(2.0)
    return m


class MFCCLayer(nn.Module):
    """``(B, 1, L)`` waveform -> ``(B, n_coeffs, L // hop + 1)``: ``torch.stft`` (Hann window, centred),
    power spectrum, mel filterbank, natural log, orthonormal DCT-II. Fixed: its one parameter (the
    filterbank and DCT in one matrix) has ``requires_grad=False``."""

    def __init__(self, cfg: MFCCConfig) -> None:
        super().__init__()
        self.cfg = cfg
        fb = mel_filterbank(cfg.n_mels, cfg.n_fft, cfg.sample_rate)
        self.register_buffer("filters", fb.float())
        self.dct = nn.Parameter(dct_matrix(cfg.n_coeffs, cfg.n_mels).float(), requires_grad=False)
        self.register_buffer("window", torch.hann_window(cfg.win_length, periodic=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        spec = torch.stft(
            x[:, 0].float(), c.n_fft, c.hop, c.win_length, self.window, center=True, pad_mode="reflect",
            return_complex=True,
        )  # fmt: skip
        power = spec.real**2 + spec.imag**2  # (B, n_fft // 2 + 1, frames)
        logmel = torch.log(torch.einsum("mf,bft->bmt", self.filters, power) + 1e-10)
        return torch.einsum("cm,bmt->bct", self.dct, logmel)


@MODELS.register("mfcc", MFCCConfig)
class MFCC(LayeredEncoder):
    """One fixed layer, the MFCCs: the MFCC baseline probed like a trained encoder's layer."""

    def __init__(self, cfg: MFCCConfig, in_channels: int = 1) -> None:
        if in_channels != 1:
            raise ConfigError(f"model.name=mfcc reads mono audio (1 channel), not {in_channels}")
        super().__init__([MFCCLayer(cfg)])
