"""The Runner protocol: every backend is one module exposing a Runner with this shape.

A Runner serves one model (an ensemble member, or the fused graph): `activate()` loads it,
`input_spec` says what it eats, `infer(images)` returns its raw outputs as float32 numpy arrays
(member: logits [N]; fused: score [N], score_std [N], member_scores [N, M]), `deactivate()` frees it.
Runners are context managers. serve and bench drive Runners and never import a backend library.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lenstrt.errors import BackendError


class Runner:
    backend = "base"
    # True where infer_async only enqueues work (CUDA streams); the ensemble runs the others in threads
    # when it wants members to overlap.
    asynchronous = False

    def __init__(self, name: str):
        self.name = name
        self.active = False
        self.info: dict[str, Any] = {"backend": self.backend}
        self.stream: Any = None          # the CUDA stream the runner enqueues on, where it has one
        self.max_batch: int | None = None  # the largest batch one call takes (a TensorRT profile's max)

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


# Outputs that are one value per row, [N, 1] in the graphs; `member_scores` is [N, M] and stays 2-D even
# for a one-member ensemble.
COLUMN_OUTPUTS = ("logits", "score", "score_std")


def order_outputs(named: dict[str, np.ndarray], wanted: list[str], source: str = "model") -> Any:
    """A runner's outputs by name, in the order the Runner contract gives them: one array for a member
    (`logits`), a tuple for the fused graph (`score`, `score_std`, `member_scores`); the per-row outputs
    become [N]. Engines and sessions list outputs in their own order, so nothing may rely on it."""
    missing = [w for w in wanted if w not in named]
    if missing:
        raise BackendError(f"{source}: outputs {missing} missing (it has {sorted(named)}); re-export the bundle")
    arrays = [named[w][:, 0] if w in COLUMN_OUTPUTS and named[w].ndim == 2 else named[w] for w in wanted]
    return arrays[0] if len(arrays) == 1 else tuple(arrays)


def batch_ranges(n: int, max_batch: int | None) -> list[tuple[int, int]]:
    """[start, stop) slices of at most `max_batch` rows covering n rows (one slice when unlimited)."""
    if n <= 0:
        return []
    if not max_batch or n <= max_batch:
        return [(0, n)]
    return [(a, min(n, a + max_batch)) for a in range(0, n, max_batch)]
