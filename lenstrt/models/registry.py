from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lenstrt.errors import ConfigError

_REGISTRY: dict[str, Callable[..., Any]] = {}
_SPECS: dict[str, ExportSpec] = {}
_CHANNELS_LAST: set[str] = set()
_FAMILIES = ("lenstrt.models.resnet", "lenstrt.models.mobilenet", "lenstrt.models.vit")


@dataclass(frozen=True)
class ExportSpec:
    """How an architecture exports: what export must produce and the tolerance it must meet."""
    input_name: str = "images"
    output_name: str = "logits"
    dynamic_batch: bool = True
    opset: int = 18
    atol_fp32: float = 1e-4        # |logit diff| <= atol + rtol |logit|, PyTorch vs ONNX Runtime, fp32 graph:
    rtol_fp32: float = 1e-5        # confident models have |logit| ~ 20, where fp32 rounding alone is ~1e-4
    atol_fp16_prob: float = 1e-2   # max |probability diff|, fp16 graph
    max_auc_drop_fp16: float = 0.002
    fp32_ops: tuple[str, ...] = ()  # ONNX op types kept in fp32 in the fp16 graph (beyond the defaults)
    # INT8 QDQ graph (export --int8): gates on what a lens search keeps (docs/export.md)
    atol_int8_prob: float = 0.5    # max |probability diff|: a gross-breakage guard (good graphs reach ~0.15)
    mean_int8_prob: float = 0.02   # mean |probability diff|
    max_auc_drop_int8: float = 0.002
    min_top100_int8: float = 0.95  # top-100 overlap with the fp32 reference (sets of >= 200 rows)
    int8_float_ops: tuple[str, ...] = ()  # ONNX op types kept in float in the INT8 graph (beyond the defaults)


def register_model(name: str, spec: ExportSpec | None = None, channels_last: bool = False):
    """`channels_last`: a CNN whose convolutions run faster in NHWC (oneDNN, cuDNN); training and the torch
    runtime then keep its weights and inputs in that layout."""
    def deco(fn):
        _REGISTRY[name] = fn
        _SPECS[name] = spec or ExportSpec()
        if channels_last:
            _CHANNELS_LAST.add(name)
        return fn
    return deco


def _load() -> None:
    for mod in _FAMILIES:
        importlib.import_module(mod)


def list_models() -> list[str]:
    _load()
    return sorted(_REGISTRY)


def prefers_channels_last(name: str) -> bool:
    _load()
    return name in _CHANNELS_LAST


def export_spec(name: str) -> ExportSpec:
    _load()
    return _SPECS[name]


def create_model(name: str, in_bands: int, image_size: int, dropout: float = 0.0, **kwargs: Any):
    """A LensClassifier: in-graph preprocessing + backbone, one logit out ([N, 1])."""
    _load()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown architecture '{name}'; choose one of {', '.join(sorted(_REGISTRY))}")
    from lenstrt.models.preprocess import LensClassifier, RobustScale

    backbone = _REGISTRY[name](in_bands=in_bands, image_size=image_size, dropout=dropout, **kwargs)
    return LensClassifier(RobustScale(), backbone)
