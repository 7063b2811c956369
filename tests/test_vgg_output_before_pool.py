"""``model.output_before_pool``: each VGG-6 layer's output is taken before its max-pool (where the official
SCFF code computes its goodness); the pool then opens the next layer, so the network is the same."""

import torch
import torch.nn.functional as F

from localssl.build import build
from localssl.config import load_config
from localssl.models.vgg import VGG6, VGG6_POOL, VGG6Config

SCFF_MODEL = {"width": 0.0625, "activity_norm": "std", "norm_image": True, "self_concat": True}


def test_same_network_outputs_before_the_pool():
    torch.manual_seed(0)
    after = VGG6(VGG6Config(**SCFF_MODEL))
    before = VGG6(VGG6Config(**SCFF_MODEL, output_before_pool=True))
    before.load_state_dict(after.state_dict())  # same parameters, same names
    x = torch.rand(3, 3, 32, 32)
    outs_after, outs_before = after(x), before(x)
    for i, (a, b, pool) in enumerate(zip(outs_after, outs_before, VGG6_POOL)):
        assert b.shape[-1] == (2 * a.shape[-1] if pool else a.shape[-1]), i
        torch.testing.assert_close(F.max_pool2d(b, 2) if pool else b, a, msg=f"layer {i + 1}")


def test_scff_goodness_before_the_pool_is_lower_and_trains():
    shapes = {}
    goodness = {}
    for before in (False, True):
        cfg = load_config("scff", ["model.width=0.0625", f"model.output_before_pool={str(before).lower()}"])
        torch.manual_seed(0)
        parts = build(cfg)
        shapes[before] = [spec.shape for spec in parts.layers]
        images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
        views = parts.views(images)
        with torch.no_grad():
            hs = parts.encoder(views.x)
        # SCFF's goodness: mean over channels of the squared (ReLU) output, here of the positive rows
        goodness[before] = [float(h[views.pos].pow(2).mean()) for h in hs]
        metrics = parts.rule.step(parts.encoder, views)  # one local step builds and back-propagates every loss
        assert all(torch.isfinite(torch.as_tensor(v)).all() for v in metrics.values())
    assert [s[1] for s in shapes[True]] == [32, 32, 16, 16, 8, 4]  # CIFAR-10: unpooled maps
    assert [s[1] for s in shapes[False]] == [32, 16, 16, 8, 4, 2]
    # a max-pool keeps the largest of four values: the unpooled map has the lower mean square wherever it pools
    for i, pool in enumerate(VGG6_POOL):
        if pool:
            assert goodness[True][i] < goodness[False][i], i
