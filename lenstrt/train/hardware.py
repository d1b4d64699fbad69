"""Device, precision and data-loader settings tuned to the machine, each decision explained."""

from __future__ import annotations

import os
from dataclasses import dataclass

from lenstrt.config import DataConfig, TrainingConfig
from lenstrt.envinfo import cpu_has_native_bf16
from lenstrt.errors import ConfigError


@dataclass(frozen=True)
class Precision:
    enabled: bool
    dtype: str          # "float16" | "bfloat16" | "float32"
    grad_scaler: bool
    why: str


def choose_precision(cfg: TrainingConfig, device: str) -> Precision:
    if device.startswith("cuda"):
        if cfg.amp is False:
            return Precision(False, "float32", False, "AMP off (--no-amp)")
        if cfg.amp_dtype == "bf16":
            return Precision(True, "bfloat16", False, "CUDA bf16 autocast (selected)")
        return Precision(True, "float16", True, "CUDA fp16 autocast + GradScaler")
    if cfg.amp_dtype == "fp16":
        raise ConfigError("fp16 autocast is CUDA-only; on a CPU use --amp-dtype bf16 or --no-amp")
    if cfg.amp is False:
        return Precision(False, "float32", False, "CPU fp32 (--no-amp)")
    native = cpu_has_native_bf16()
    if cfg.amp is True or native:
        return Precision(True, "bfloat16", False,
                         "CPU bf16 autocast" + (" (native bf16: about 2x fp32)" if native else " (requested)"))
    return Precision(False, "float32", False, "CPU fp32 (no native bf16 on this CPU)")


@dataclass(frozen=True)
class LoaderSettings:
    num_workers: int
    pin_memory: bool
    persistent_workers: bool
    prefetch_factor: int | None
    why: str


def loader_settings(dcfg: DataConfig, device: str, in_memory: bool, streaming: bool = False) -> LoaderSettings:
    cores = os.cpu_count() or 1
    cuda = device.startswith("cuda")
    if dcfg.num_workers is not None:
        workers, why = dcfg.num_workers, "set by config"
    elif streaming and not cuda:
        # Reading and decoding slices overlaps the step in one process; more would take cores from it.
        workers, why = 1, "streamed shards on CPU: one reader process overlaps reading with compute"
    elif in_memory and not cuda:
        # Indexing an in-RAM array costs microseconds; a worker would only take a core from the model.
        workers, why = 0, "in-memory data on CPU: workers would compete with compute"
    elif cuda:
        workers, why = max(1, min(8, cores - 1)), "CUDA: one core kept for the training loop"
    else:
        workers, why = max(1, min(4, cores // 2)), "on-the-fly simulation: half the cores"
    pin = dcfg.pin_memory if dcfg.pin_memory is not None else cuda
    return LoaderSettings(workers, pin, dcfg.persistent_workers and workers > 0,
                          dcfg.prefetch_factor if workers > 0 else None, why)


def pick_device(requested: str | None) -> str:
    import torch

    if requested in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda requested but torch.cuda.is_available() is False; use --device cpu")
    return requested
