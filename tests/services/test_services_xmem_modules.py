"""XMem's blocks against references: the ResNet trunks against torchvision's ResNet-50 / ResNet-18 (weights=None,
filled with the same random weights), CBAM and the GRU updates against their formulas in plain torch."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from xmem_cases import random_xmem

from vrsjax.services.xmem.modules import CBAM, GroupResBlock, HiddenReinforcer

torchvision = pytest.importorskip("torchvision")


def randomize(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) / np.sqrt(max(p[0].numel(), 1)))
    return module.eval()


def torchvision_trunk(tv, x):
    x = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
    f4 = tv.layer1(x)
    f8 = tv.layer2(f4)
    return tv.layer3(f8), f8, f4


@torch.inference_mode()
def test_key_encoder_is_torchvision_resnet50_to_layer3():
    ours = random_xmem().key_encoder
    tv = torchvision.models.resnet50(weights=None).eval()
    state = {k.replace("res2.", "layer1.", 1): v for k, v in ours.state_dict().items()}
    missing, unexpected = tv.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith(("layer4.", "fc.")) for k in missing)
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    for got, expected in zip(ours(x), torchvision_trunk(tv, x), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@torch.inference_mode()
def test_value_trunk_is_torchvision_resnet18_with_five_input_channels():
    ours = random_xmem().value_encoder
    tv = torchvision.models.resnet18(weights=None)
    tv.conv1 = torch.nn.Conv2d(5, 64, kernel_size=7, stride=2, padding=3, bias=False)
    state = {
        k: v for k, v in ours.state_dict().items() if k.split(".")[0] in ("conv1", "bn1", "layer1", "layer2", "layer3")
    }
    missing, unexpected = tv.eval().load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith(("layer4.", "fc.")) for k in missing)
    x = torch.randn(3, 5, 64, 96, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(ours.trunk(x), torchvision_trunk(tv, x)[0], rtol=1e-5, atol=1e-5)


@torch.inference_mode()
def test_cbam_is_channel_then_spatial_attention():
    cbam = randomize(CBAM(64), 0)
    x = torch.randn(2, 64, 5, 7, generator=torch.Generator().manual_seed(2))
    fc1, fc2 = cbam.ChannelGate.mlp[1], cbam.ChannelGate.mlp[3]

    def mlp(v):
        return F.linear(F.relu(F.linear(v, fc1.weight, fc1.bias)), fc2.weight, fc2.bias)

    y = x * torch.sigmoid(mlp(x.mean((2, 3))) + mlp(x.amax((2, 3))))[:, :, None, None]
    pooled = torch.stack([y.amax(1), y.mean(1)], 1)
    conv = cbam.SpatialGate.spatial.conv
    expected = y * torch.sigmoid(F.conv2d(pooled, conv.weight, conv.bias, padding=3))
    torch.testing.assert_close(cbam(x), expected, rtol=1e-5, atol=1e-6)


@torch.inference_mode()
def test_group_res_block_and_hidden_reinforcer_formulas():
    gen = torch.Generator().manual_seed(3)
    g = torch.randn(1, 2, 12, 4, 5, generator=gen)
    block = randomize(GroupResBlock(12, 8), 1)

    def conv(layer, x):
        return torch.stack([F.conv2d(x[:, k], layer.weight, layer.bias, padding=1) for k in range(x.shape[1])], 1)

    expected = conv(block.conv2, F.relu(conv(block.conv1, F.relu(g)))) + conv(block.downsample, g)
    torch.testing.assert_close(block(g), expected, rtol=1e-5, atol=1e-6)

    reinforcer = randomize(HiddenReinforcer(12, 6), 2)
    h = torch.randn(1, 2, 6, 4, 5, generator=gen)
    forget, update, candidate = conv(reinforcer.transform, torch.cat([g, h], 2)).chunk(3, dim=2)
    expected = torch.sigmoid(forget) * h * (1 - torch.sigmoid(update)) + torch.sigmoid(update) * torch.tanh(candidate)
    torch.testing.assert_close(reinforcer(g, h), expected, rtol=1e-5, atol=1e-6)


@torch.inference_mode()
def test_key_projection_shrinkage_and_selection_ranges():
    model = random_xmem()
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(4))
    key, shrinkage, selection, f16, f8, f4 = model.encode_key(x, True, True)
    assert key.shape == (1, 64, 4, 6) and shrinkage.shape == (1, 1, 4, 6) and selection.shape == (1, 64, 4, 6)
    assert (shrinkage >= 1).all() and ((selection > 0) & (selection < 1)).all()
    assert (f16.shape, f8.shape, f4.shape) == ((1, 1024, 4, 6), (1, 512, 8, 12), (1, 256, 16, 24))
    assert model.encode_key(x, False, False)[1:3] == (None, None)
