"""Audio encoder of CPC/GIM/CLAPP: GIM's conv geometry, and the e-prop GRU (CLAPP 2021 App. C, Eqs. 15–18).

The e-prop GRU's autodiff gradient must equal e-prop computed by hand: eligibility traces run forward
in time, ``ε_t = z_t ⊙ ε_{t−1} + ∂h_t/∂θ |local`` (the recurrent input of the gates held fixed), and
the gradient is ``Σ_t (∂E/∂h_t) · ε_t`` (Bellec et al. 2020). It must differ from BPTT's gradient,
which in turn is the fused ``nn.GRU``'s.
"""

from __future__ import annotations

import torch

from localssl.models.audio import AudioCPC, AudioCPCConfig, GRULayer

IN, H, T, B = 3, 4, 7, 2


def _loss_and_layer(eprop: bool, seed: int = 0):
    torch.manual_seed(seed)
    layer = GRULayer(IN, H, eprop=eprop).double()
    x = torch.randn(B, IN, T, dtype=torch.float64)
    target = torch.randn(B, H, T, dtype=torch.float64)
    h = layer(x)
    loss = ((h - target) ** 2).sum() * 0.5  # E = Σ_t ½‖h_t − y_t‖², learning signal ∂E/∂h_t = h_t − y_t
    loss.backward()
    return layer, x, target, h.detach()


def _eprop_by_hand(layer: GRULayer, x: torch.Tensor, target: torch.Tensor, h_all: torch.Tensor):
    g = layer.gru
    w_ir, w_iz, w_in = g.weight_ih_l0.detach().chunk(3)
    w_hr, w_hz, w_hn = g.weight_hh_l0.detach().chunk(3)
    b_ir, b_iz, b_in = g.bias_ih_l0.detach().chunk(3)
    b_hr, b_hz, b_hn = g.bias_hh_l0.detach().chunk(3)
    names = [p + g for p in ("w_i", "w_h", "b_i", "b_h") for g in "rzn"]
    shapes = {n: (B, H, IN) if n.startswith("w_i") else (B, H, H) if n.startswith("w_h") else (B, H) for n in names}
    trace = {n: torch.zeros(s, dtype=torch.float64) for n, s in shapes.items()}
    grad = {n: torch.zeros(s[1:], dtype=torch.float64) for n, s in shapes.items()}
    h_prev = torch.zeros(B, H, dtype=torch.float64)
    for t in range(T):
        xt = x[:, :, t]
        hn_lin = h_prev @ w_hn.T + b_hn
        r = torch.sigmoid(xt @ w_ir.T + b_ir + h_prev @ w_hr.T + b_hr)
        z = torch.sigmoid(xt @ w_iz.T + b_iz + h_prev @ w_hz.T + b_hz)
        n = torch.tanh(xt @ w_in.T + b_in + r * hn_lin)
        h = (1 - z) * n + z * h_prev
        d_an = (1 - z) * (1 - n**2)  # ∂h_t/∂a_n
        d_az = (h_prev - n) * z * (1 - z)  # ∂h_t/∂a_z
        d_ar = d_an * hn_lin * r * (1 - r)  # ∂h_t/∂a_r
        local = {
            "w_ir": d_ar[:, :, None] * xt[:, None],
            "w_iz": d_az[:, :, None] * xt[:, None],
            "w_in": d_an[:, :, None] * xt[:, None],
            "w_hr": d_ar[:, :, None] * h_prev[:, None],
            "w_hz": d_az[:, :, None] * h_prev[:, None],
            "w_hn": (d_an * r)[:, :, None] * h_prev[:, None],
            "b_ir": d_ar,
            "b_iz": d_az,
            "b_in": d_an,
            "b_hr": d_ar,
            "b_hz": d_az,
            "b_hn": d_an * r,
        }
        signal = h - target[:, :, t]  # learning signal ∂E/∂h_t
        for name in names:
            decay = z if trace[name].dim() == 2 else z[:, :, None]
            trace[name] = decay * trace[name] + local[name]  # eligibility trace, forward in time
            sig = signal if trace[name].dim() == 2 else signal[:, :, None]
            grad[name] += (sig * trace[name]).sum(0)
        h_prev = h
    torch.testing.assert_close(h_prev, h_all[:, :, -1])
    return tuple(torch.cat([grad[p + g] for g in "rzn"]) for p in ("w_i", "w_h", "b_i", "b_h"))


def test_eprop_gradient_is_eligibility_traces_times_learning_signal() -> None:
    layer, x, target, h = _loss_and_layer(eprop=True)
    w_ih, w_hh, b_ih, b_hh = _eprop_by_hand(layer, x, target, h)
    g = layer.gru
    torch.testing.assert_close(g.weight_ih_l0.grad, w_ih, atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(g.weight_hh_l0.grad, w_hh, atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(g.bias_ih_l0.grad, b_ih, atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(g.bias_hh_l0.grad, b_hh, atol=1e-10, rtol=1e-8)


def test_eprop_forward_equals_bptt_forward_and_gradients_differ() -> None:
    ep, _, _, h_ep = _loss_and_layer(eprop=True)
    bp, _, _, h_bp = _loss_and_layer(eprop=False)
    torch.testing.assert_close(h_ep, h_bp)  # same network, only the credit assignment differs
    assert (ep.gru.weight_hh_l0.grad - bp.gru.weight_hh_l0.grad).abs().max() > 1e-3
    assert (ep.gru.weight_ih_l0.grad - bp.gru.weight_ih_l0.grad).abs().max() > 1e-3


def test_bptt_is_torch_gru() -> None:
    bp, x, target, _ = _loss_and_layer(eprop=False)
    ref = torch.nn.GRU(IN, H, batch_first=True).double()
    ref.load_state_dict(bp.gru.state_dict())
    out = ref(x.transpose(1, 2))[0].transpose(1, 2)
    (0.5 * ((out - target) ** 2).sum()).backward()
    torch.testing.assert_close(ref.weight_hh_l0.grad, bp.gru.weight_hh_l0.grad)


def test_gim_conv_geometry() -> None:
    """GIM's audio encoder: 20480 samples -> 4095, 1023, 512, 257, 128 frames (10 ms), then the GRU."""
    enc = AudioCPC(AudioCPCConfig(width=1 / 64))
    shapes = enc.output_shapes((1, 20480))
    assert [s[1] for s in shapes] == [4095, 1023, 512, 257, 128, 128]
    assert [s[0] for s in shapes] == [8, 8, 8, 8, 8, 4]
    assert enc.autoregressive_layers == {5}
