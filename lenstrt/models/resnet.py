"""ResNet family (torchvision), first conv taking C bands, one logit out."""

from __future__ import annotations

from torch import nn
from torchvision.models import resnet18 as tv_resnet18

from lenstrt.models.registry import ExportSpec, register_model


def _keep_stem(image_size: int, keep_stem_resolution: bool | None) -> bool:
    return image_size <= 96 if keep_stem_resolution is None else keep_stem_resolution


@register_model("resnet18", ExportSpec(), channels_last=True)
def resnet18(in_bands: int, image_size: int, dropout: float = 0.0, keep_stem_resolution: bool | None = None):
    """keep_stem_resolution (default: on for cutouts <= 96 px) drops the stem's max-pool, so a 64 px
    cutout reaches the last stage at 4x4 rather than 2x2. The 7x7/2 stem conv stays: a 3x3/1 stem
    was ~5x slower to train on a CPU for no measured gain."""
    m = tv_resnet18(weights=None, num_classes=1)
    m.conv1 = nn.Conv2d(in_bands, 64, kernel_size=7, stride=2, padding=3, bias=False)
    if _keep_stem(image_size, keep_stem_resolution):
        m.maxpool = nn.Identity()
    m.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(512, 1))
    return m


@register_model("resnet18_half", ExportSpec(), channels_last=True)
def resnet18_half(in_bands: int, image_size: int, dropout: float = 0.0, keep_stem_resolution: bool | None = None):
    """ResNet-18's layout (stem, 2-2-2-2 torchvision BasicBlocks) at half its width (32-64-128-256 channels):
    a quarter of the FLOPs, ~3.4x ResNet-18's training rate on a 2-core CPU, and the same resolution at each
    stage, which a MobileNet's early strides give away (benchmarks/results/2026-11-30-cpu-architectures.md).
    torchvision's ResNet fixes its widths at 64-512 for BasicBlock, so the stages are assembled here."""
    from collections import OrderedDict

    from torchvision.models.resnet import BasicBlock

    widths = (32, 64, 128, 256)
    # torchvision's names (conv1 ... layer4, fc), and an Identity where the max-pool is dropped, so both stems
    # and resnet18 checkpoints read alike
    parts: OrderedDict[str, nn.Module] = OrderedDict(
        conv1=nn.Conv2d(in_bands, widths[0], kernel_size=7, stride=2, padding=3, bias=False),
        bn1=nn.BatchNorm2d(widths[0]),
        relu=nn.ReLU(inplace=True),
        maxpool=nn.Identity() if _keep_stem(image_size, keep_stem_resolution)
        else nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
    )
    inplanes = widths[0]
    for stage, planes in enumerate(widths):
        stride = 1 if stage == 0 else 2
        down = None
        if stride != 1 or inplanes != planes:
            down = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))
        parts[f"layer{stage + 1}"] = nn.Sequential(BasicBlock(inplanes, planes, stride, down), BasicBlock(planes, planes))
        inplanes = planes
    parts.update(avgpool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(),
                 fc=nn.Sequential(nn.Dropout(dropout), nn.Linear(inplanes, 1)))
    m = nn.Sequential(parts)
    for mod in m.modules():  # torchvision's ResNet initialisation
        if isinstance(mod, nn.Conv2d):
            nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
    return m
