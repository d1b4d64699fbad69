"""Vision Transformers (torchvision VisionTransformer) sized to the cutout, C-band patch embedding."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from torchvision.models.vision_transformer import VisionTransformer

from lenstrt.models.registry import ExportSpec, register_model

# LayerNorm / Softmax stay fp32 in the fp16 graph: the overflow there is the classic ViT fp16 bug.
_VIT_SPEC = ExportSpec(fp32_ops=("LayerNormalization", "Softmax", "ReduceMean", "Pow", "Erf"))


class _ViT(nn.Module):
    def __init__(self, in_bands: int, image_size: int, patch: int, layers: int, heads: int, width: int, mlp: int,
                 dropout: float, grad_checkpointing: bool = False):
        super().__init__()
        if image_size % patch:
            raise ValueError(f"image size {image_size} is not a multiple of the patch size {patch}")
        self.vit = VisionTransformer(image_size=image_size, patch_size=patch, num_layers=layers, num_heads=heads,
                                     hidden_dim=width, mlp_dim=mlp, num_classes=1)
        self.vit.conv_proj = nn.Conv2d(in_bands, width, kernel_size=patch, stride=patch)
        # torchvision zero-initialises the head; a small random init keeps an untrained model informative
        self.vit.heads = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, 1))
        nn.init.normal_(self.vit.heads[1].weight, std=0.02)
        self.grad_checkpointing = grad_checkpointing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.grad_checkpointing and self.training):
            return self.vit(x)
        v = self.vit
        x = v._process_input(x)
        x = torch.cat([v.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        enc = v.encoder
        x = enc.dropout(x + enc.pos_embedding)
        for layer in enc.layers:
            x = checkpoint(layer, x, use_reentrant=False)
        x = enc.ln(x)
        return v.heads(x[:, 0])


@register_model("vit_b_16", _VIT_SPEC)
def vit_b_16(in_bands: int, image_size: int, dropout: float = 0.0, grad_checkpointing: bool = False):
    return _ViT(in_bands, image_size, 16, 12, 12, 768, 3072, dropout, grad_checkpointing)


@register_model("vit_small", _VIT_SPEC)
def vit_small(in_bands: int, image_size: int, dropout: float = 0.0, grad_checkpointing: bool = False):
    """CPU-trainable: patch 8, 4 layers, width 192 (64 tokens for a 64 px cutout)."""
    return _ViT(in_bands, image_size, 8, 4, 3, 192, 768, dropout, grad_checkpointing)


@register_model("vit_tiny", _VIT_SPEC)
def vit_tiny(in_bands: int, image_size: int, dropout: float = 0.0, grad_checkpointing: bool = False):
    """For tests and quick demos: patch 8, 2 layers, width 64."""
    return _ViT(in_bands, image_size, 8, 2, 2, 64, 128, dropout, grad_checkpointing)
