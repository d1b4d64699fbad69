import numpy as np
import pytest
import torch

from lenstrt.errors import ConfigError
from lenstrt.models import create_model, export_spec, list_models


@pytest.mark.parametrize("arch", ["resnet18", "resnet18_half", "mobilenet_v3_small", "vit_tiny"])
def test_scores_invariant_to_band_scale_and_sky(sim_dir, arch):
    from lenstrt.data.readers import load_all

    torch.manual_seed(0)
    model = create_model(arch, 3, 64).eval()
    x = torch.from_numpy(load_all(sim_dir)["images"][:16])
    with torch.no_grad():
        ref = torch.sigmoid(model(x))
        scaled = x.clone()
        scaled[:, 0] *= 37.0      # g band in other units
        scaled[:, 2] *= 0.004     # i band in other units
        shifted = x.clone()
        shifted[:, 1] += 1234.5   # r band with an unsubtracted sky level
        for other in (scaled, shifted):
            assert (torch.sigmoid(model(other)) - ref).abs().max().item() < 1e-3


def test_registry_and_specs():
    assert {"resnet18", "resnet18_half", "mobilenet_v3_small", "mobilenet_v3_large", "vit_b_16", "vit_small",
            "vit_tiny"} <= set(list_models())
    assert export_spec("vit_small").fp32_ops and export_spec("resnet18").opset >= 18
    with pytest.raises(ConfigError, match="unknown architecture 'resnet99'"):
        create_model("resnet99", 3, 64)


def test_resnet18_half_keeps_resnet18s_resolution_at_half_the_width():
    """The point of resnet18_half: each stage sees the map size ResNet-18's does (a 64 px cutout ends at
    4x4, 2x2 with the max-pool), with half the channels and about a quarter of the weights."""
    def stage_shapes(model, x):
        shapes = []
        hooks = [mod.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape[1:])))
                 for mod in model.modules() if type(mod).__name__ == "BasicBlock"]
        model.eval()(x)
        for h in hooks:
            h.remove()
        return shapes[1::2]  # the second block of each stage

    x = torch.randn(2, 4, 64, 64)
    full, half = create_model("resnet18", 4, 64), create_model("resnet18_half", 4, 64, dropout=0.2)
    got, ref = stage_shapes(half, x), stage_shapes(full, x)
    assert [s[1:] for s in got] == [s[1:] for s in ref] == [(32, 32), (16, 16), (8, 8), (4, 4)]
    assert [s[0] * 2 for s in got] == [s[0] for s in ref] == [64, 128, 256, 512]
    pooled = create_model("resnet18_half", 4, 64, keep_stem_resolution=False)
    assert stage_shapes(pooled, x)[-1] == (256, 2, 2)
    assert list(pooled.state_dict()) == list(half.state_dict()) == list(full.state_dict())  # torchvision's names
    big = torch.randn(1, 4, 128, 128)  # > 96 px: the max-pool stays by default, as in resnet18
    assert stage_shapes(create_model("resnet18_half", 4, 128), big)[-1] == (256, 4, 4)
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert 0.2 < n(half) / n(full) < 0.3
    assert [m.p for m in half.modules() if isinstance(m, torch.nn.Dropout)] == [0.2]
    assert half(x).shape == (2, 1)


def test_shapes_single_band_and_vit_b16():
    x = torch.randn(2, 1, 64, 64)
    assert create_model("resnet18", 1, 64).eval()(x).shape == (2, 1)
    vit = create_model("vit_b_16", 1, 64).eval()
    out = vit(x)
    assert out.shape == (2, 1) and out.abs().sum() > 0  # head is not zero-initialised


def test_mobilenet_takes_the_bands_and_gives_one_logit_after_dropout():
    m = create_model("mobilenet_v3_small", 5, 64, dropout=0.3)
    assert m.backbone.features[0][0].in_channels == 5
    head = m.backbone.classifier
    assert head[-2].p == 0.3 and head[-1].out_features == 1
    m.eval()
    out = m(torch.randn(3, 5, 64, 64))
    assert out.shape == (3, 1) and torch.isfinite(out).all()


def test_vit_grad_checkpointing_matches():
    torch.manual_seed(0)
    a = create_model("vit_tiny", 3, 64, grad_checkpointing=True)
    b = create_model("vit_tiny", 3, 64)
    b.load_state_dict(a.state_dict())
    a.train(), b.train()
    x = torch.randn(4, 3, 64, 64)
    torch.manual_seed(1)
    la = a(x).sum()
    torch.manual_seed(1)
    lb = b(x).sum()
    la.backward(), lb.backward()
    ga = a.backbone.vit.conv_proj.weight.grad
    gb = b.backbone.vit.conv_proj.weight.grad
    assert torch.allclose(la, lb, atol=1e-5) and torch.allclose(ga, gb, atol=1e-5)
    assert np.isfinite(ga.numpy()).all()
