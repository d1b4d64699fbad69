"""Preprocessing that belongs to the model, so it is exported with it and users can bring data in any
units: per cutout and band, subtract the median of the outer frame (a sky estimate), divide by
1.4826 x its median absolute deviation (a robust noise estimate), then asinh(x / 3) to tame bright
cores. The score is therefore invariant to a positive scale factor and a constant offset per band.

The median is taken with a full sort (exported as ONNX TopK) rather than torch.median, which keeps the
graph to ops every backend supports; the frame of a 64x64 cutout is only 960 pixels.
"""

from __future__ import annotations

import torch
from torch import nn

PREPROCESS_SPEC = {"name": "robust_asinh", "frame": 4, "mad_scale": 1.4826, "asinh_softening": 3.0}


def _median_last(x: torch.Tensor) -> torch.Tensor:
    n = x.shape[-1]
    s, _ = torch.sort(x, dim=-1)
    if n % 2:
        return s[..., n // 2]
    return 0.5 * (s[..., n // 2 - 1] + s[..., n // 2])


class RobustScale(nn.Module):
    def __init__(self, frame: int = 4, mad_scale: float = 1.4826, softening: float = 3.0):
        super().__init__()
        self.frame, self.mad_scale, self.softening = frame, mad_scale, softening

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        f = self.frame
        n, c = x.shape[0], x.shape[1]
        border = torch.cat([
            x[:, :, :f, :].reshape(n, c, -1), x[:, :, -f:, :].reshape(n, c, -1),
            x[:, :, f:-f, :f].reshape(n, c, -1), x[:, :, f:-f, -f:].reshape(n, c, -1),
        ], dim=-1)
        med = _median_last(border)
        mad = _median_last((border - med[..., None]).abs())
        sigma = (self.mad_scale * mad).clamp_min(1e-20)[..., None, None]
        return torch.asinh((x - med[..., None, None]) / sigma / self.softening)


class LensClassifier(nn.Module):
    def __init__(self, preprocess: nn.Module, backbone: nn.Module):
        super().__init__()
        self.preprocess = preprocess
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.preprocess(x))
