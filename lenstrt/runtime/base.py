"""The Runner protocol: every backend is one module exposing a Runner with this shape.

A Runner serves one model (an ensemble member, or the fused graph): `activate()` loads it,
`input_spec` says what it eats, `infer(images)` returns its raw outputs as float32 numpy arrays
(member: logits [N]; fused: score [N], score_std [N], member_scores [N, M]), `deactivate()` frees it.
Runners are context managers. serve and bench drive Runners and never import a backend library.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class Runner:
    backend = "base"

    def __init__(self, name: str):
        self.name = name
        self.active = False
        self.info: dict[str, Any] = {"backend": self.backend}

    def activate(self) -> None:
        self.active = True

    def deactivate(self) -> None:
        self.active = False

    @property
    def input_spec(self) -> dict[str, Any]:
        raise NotImplementedError

    def infer(self, images) -> Any:
        raise NotImplementedError

    def infer_async(self, images) -> Any:
        """Enqueue work and return a handle for `collect` (GPU runners overlap members this way)."""
        return self.infer(images)

    def collect(self, handle) -> Any:
        return handle

    def __enter__(self):
        if not self.active:
            self.activate()
        return self

    def __exit__(self, *exc) -> None:
        if self.active:
            self.deactivate()


def as_numpy(x) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return np.ascontiguousarray(x, dtype=np.float32)
    return x.detach().float().cpu().numpy()
