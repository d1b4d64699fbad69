"""One graph for the whole ensemble: shared preprocessing, every member's backbone, and the fusion
(mean and spread of the members' calibrated probabilities), so an engine runs it in one launch."""

from __future__ import annotations

import torch
from torch import nn

FUSED_OUTPUTS = ["score", "score_std", "member_scores"]


class FusedEnsemble(nn.Module):
    def __init__(self, members: list[nn.Module], temperatures: list[float]):
        super().__init__()
        # every LensClassifier carries the same parameter-free preprocessing: run it once
        self.preprocess = members[0].preprocess
        self.backbones = nn.ModuleList([m.backbone for m in members])
        self.register_buffer("inv_t", 1.0 / torch.tensor(temperatures, dtype=torch.float32))

    def forward(self, x: torch.Tensor):
        z = self.preprocess(x)
        logits = torch.cat([b(z) for b in self.backbones], dim=1)
        probs = torch.sigmoid(logits.float() * self.inv_t)
        mean = probs.mean(dim=1, keepdim=True)
        std = (probs - mean).pow(2).mean(dim=1, keepdim=True).sqrt()
        return mean, std, probs
