"""MobileNetV3 (torchvision), first conv taking C bands, one logit out.

Why it is here: on a CPU the training budget, not the network's capacity, limits what a lens finder learns.
A MobileNetV3-Small step on 64x64 cutouts costs about a tenth of a ResNet-18 one (benchmarks/results,
issue #15), so twenty minutes show it ten times the images.
"""

from __future__ import annotations

from torch import nn

from lenstrt.models.registry import ExportSpec, register_model


def _adapt(m: nn.Module, in_bands: int, dropout: float) -> nn.Module:
    first = m.features[0][0]
    m.features[0][0] = nn.Conv2d(
        in_bands,
        first.out_channels,
        kernel_size=first.kernel_size,
        stride=first.stride,
        padding=first.padding,
        bias=False,
    )
    last = m.classifier[-1]
    m.classifier[-2] = nn.Dropout(dropout)
    m.classifier[-1] = nn.Linear(last.in_features, 1)
    return m


@register_model("mobilenet_v3_small", ExportSpec(), channels_last=True)
def mobilenet_v3_small(in_bands: int, image_size: int, dropout: float = 0.0):
    from torchvision.models import mobilenet_v3_small as tv

    return _adapt(tv(weights=None), in_bands, dropout)


@register_model("mobilenet_v3_large", ExportSpec(), channels_last=True)
def mobilenet_v3_large(in_bands: int, image_size: int, dropout: float = 0.0):
    from torchvision.models import mobilenet_v3_large as tv

    return _adapt(tv(weights=None), in_bands, dropout)
