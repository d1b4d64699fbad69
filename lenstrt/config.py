"""Configuration: frozen dataclasses, loaded from YAML, with explicit CLI flags winning.

A YAML file has sections (`training:`, `data:`, `inference:`, `ensemble:`, `cloud:`), each mapped
onto one dataclass below. Unknown keys are errors (a typo must not silently do nothing). A CLI
option left at None means "keep the file's value, else the default".
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from lenstrt.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class TrainingConfig:
    arch: tuple[str, ...] = ("resnet18",)
    members: int = 1                     # members per arch, each with its own seed
    epochs: int = 10
    max_steps: int | None = None
    time_budget_min: float | None = None  # schedule on elapsed time; stops when it is spent
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-2
    warmup_steps: int = 50
    scheduler: str = "cosine"            # cosine | plateau
    gradient_clip: float = 1.0
    amp: bool | None = None              # None: auto (CUDA: on; CPU: bf16 when the CPU has native bf16)
    amp_dtype: str = "auto"              # auto | fp16 | bf16
    channels_last: bool = True
    grad_checkpointing: bool = False
    dropout: float = 0.1
    val_fraction: float = 0.1
    val_every: int = 200                 # steps between validations
    seed: int = 0
    augment: bool = True
    band_jitter: float = 0.0             # each band's flux times 1 + U(-j, j) per cutout (calibration/colour
                                         # randomization: relative colours within a cutout are kept)
    keep_stem_resolution: bool = True    # resnet18, resnet18_half: drop the max-pool for small cutouts
    init: str | None = None              # warm start (fine-tuning): the weights of a checkpoint or run directory;
                                         # optimizer, schedule and step count start fresh
    tensorboard: bool = False            # the same as log: [tensorboard]
    log: tuple[str, ...] = ()            # experiment trackers: tensorboard, wandb, mlflow
    nproc: int = 1                       # `lenstrt train --nproc N`: N DDP ranks on this node via torchrun
    member_parallel: bool = False        # with nproc > 1: each rank trains whole members (one per GPU), no DDP
    ddp_timeout_s: float = 1800.0        # a rank waiting longer on its peers fails (no silent hang)

    def __post_init__(self) -> None:
        # checked here, where YAML and CLI values both land, not by the optimizer after the data has loaded
        # (lr 0 is allowed, as torch allows it: the weights stay put, which the --init tests rely on)
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr >= 0):
            raise ConfigError(f"lr {self.lr}: need a learning rate >= 0 (default 1e-3)")
        if not (isinstance(self.weight_decay, (int, float)) and math.isfinite(self.weight_decay)
                and self.weight_decay >= 0):
            raise ConfigError(f"weight_decay {self.weight_decay}: need a number >= 0 (default 1e-2)")
        if not 0.0 <= self.band_jitter < 1.0:  # a gain 1 + U(-j, j) must stay positive
            raise ConfigError(f"band_jitter {self.band_jitter}: need 0 <= band_jitter < 1")
        if isinstance(self.init, os.PathLike):
            object.__setattr__(self, "init", os.fspath(self.init))
        if self.init is not None and not isinstance(self.init, str):
            raise ConfigError(f"init {self.init!r}: need the path of a checkpoint or run directory")


@dataclass(frozen=True)
class DataConfig:
    num_workers: int | None = None       # None: auto-tuned to the machine
    pin_memory: bool | None = None       # None: on when training on CUDA
    persistent_workers: bool = True
    prefetch_factor: int = 2
    simulate_on_the_fly: bool = False
    survey: str = "lsst-gri"
    stream: bool | None = None           # None: stream shards when the set would not fit in memory
    shuffle_buffer: int = 2048           # rows mixed across read slices when streaming
    stream_chunk: int = 256              # rows per slice read (and per unit dealt to ranks/workers)
    stream_val_max: int | None = 4096    # cap on held-out rows when streaming (they are held in memory)


@dataclass(frozen=True)
class InferenceConfig:
    batch_size: int = 128
    amp: bool = True
    parallel: bool = True
    mc_samples: int = 0
    backend: str = "auto"
    tta: bool = False                    # serve: the mean of the 8 dihedral views of each cutout (8x the compute)


@dataclass(frozen=True)
class EnsembleConfig:
    models: tuple[str, ...] = ("resnet18",)
    fusion_method: str = "mean"          # mean | uncertainty_weighted


@dataclass(frozen=True)
class CloudConfig:
    platform: str = "aws"
    optimization: bool = True


@dataclass(frozen=True)
class Config:
    training: TrainingConfig = field(default_factory=TrainingConfig)
    data: DataConfig = field(default_factory=DataConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    cloud: CloudConfig = field(default_factory=CloudConfig)


def _coerce(value: Any, default: Any) -> Any:
    if isinstance(default, tuple) and isinstance(value, (list, tuple)):
        return tuple(value)
    if isinstance(default, tuple) and isinstance(value, str):
        return (value,)
    return value


def section_from_dict(cls: type[T], data: dict[str, Any], where: str) -> T:
    names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    defaults = cls()
    values = {}
    for k, v in data.items():
        values[k] = _typed(_coerce(v, getattr(defaults, k)), getattr(defaults, k), f"{where} {k}")
    try:
        return dataclasses.replace(defaults, **values)  # type: ignore[type-var]
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _typed(value: Any, default: Any, where: str) -> Any:
    """The value as the type of its default (an int where a float is expected is fine); a key whose
    default is None takes anything. A wrong type is one ConfigError, not a traceback deep in training."""
    if default is None or value is None:
        return value
    if isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(default, bool) and isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float))
        value = float(value) if ok else value
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(f"{where}: {value!r} is not {type(default).__name__} (default {default!r})")
    return value


def load_config(path: str | Path | None) -> Config:
    """Read a YAML config; None gives the defaults."""
    if path is None:
        return Config()
    import yaml

    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config ({exc.strerror}); check the path") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({' '.join(str(exc).split())}); fix the syntax") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping of sections (training:, data:, ...)")
    sections = {f.name: f for f in dataclasses.fields(Config)}
    unknown = sorted(set(raw) - set(sections))
    if unknown:
        raise ConfigError(f"{p}: unknown section(s) {', '.join(unknown)}; known: {', '.join(sorted(sections))}")
    parts = {}
    for name in sections:
        if name in raw:
            sub = raw[name] or {}
            if not isinstance(sub, dict):
                raise ConfigError(f"{p}: section '{name}' must be a mapping")
            parts[name] = section_from_dict(type(getattr(Config(), name)), sub, f"{p} [{name}]")
    return dataclasses.replace(Config(), **parts)


def override(section: T, **values: Any) -> T:
    """Apply CLI values that were given (not None) on top of a config section."""
    given = {k: _coerce(v, getattr(section, k)) for k, v in values.items() if v is not None and v != ()}
    return dataclasses.replace(section, **given) if given else section  # type: ignore[type-var]


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)
