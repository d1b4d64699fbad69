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
    """The template every backend fills. Public `activate` / `infer` / `infer_async` / `collect` /
    `deactivate` are fixed here: state checks (not activated, already deactivated) and input checks
    (shape [N, C, H, W] against the bundle input, float32), then the backend's own `_activate`,
    `_infer`, `_infer_async`, `_collect` and `_deactivate`. A backend writes only those."""

    backend = "base"
    # True where infer_async only enqueues work (CUDA streams); the ensemble runs the others in threads
    # when it wants members to overlap.
    asynchronous = False

    def __init__(self, name: str, input_shape: tuple[int, ...] | None = None):
        self.name = name
        self.active = False
        self.closed = False               # deactivated: activate() again to reuse
        self.input_shape = tuple(input_shape) if input_shape else None  # (C, H, W) the bundle takes
        self.info: dict[str, Any] = {"backend": self.backend}
        self.stream: Any = None          # the CUDA stream the runner enqueues on, where it has one
        self.max_batch: int | None = None  # the largest batch one call takes (a TensorRT profile's max)

    # -- the fixed public face ------------------------------------------------------------------------
    def activate(self) -> None:
        if self.active:
            return
        self._activate()
        self.active, self.closed = True, False

    def deactivate(self) -> None:
        if not self.active:
            return
        try:
            self._deactivate()
        finally:
            self.active, self.closed = False, True

    def infer(self, images: Any) -> Any:
        return self._infer(self._checked(images))

    def infer_async(self, images: Any) -> Any:
        """Enqueue work and return a handle for `collect` (GPU runners overlap members this way)."""
        return self._infer_async(self._checked(images))

    def collect(self, handle: Any) -> Any:
        self._check_state()
        return self._collect(handle)

    @property
    def input_spec(self) -> dict[str, Any]:
        shape = [-1, *self.input_shape] if self.input_shape else [-1]
        return getattr(self, "_spec", None) or {"name": "images", "shape": shape, "dtype": "float32"}

    # -- what a backend implements --------------------------------------------------------------------
    def _activate(self) -> None:
        pass

    def _deactivate(self) -> None:
        pass

    def _infer(self, images: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} implements neither _infer nor infer")

    def _infer_async(self, images: Any) -> Any:
        return self._infer(images)

    def _collect(self, handle: Any) -> Any:
        return handle

    # -- checks -----------------------------------------------------------------------------------------
    def _check_state(self) -> None:
        if not self.active:
            when = "after deactivate()" if self.closed else "before activate()"
            raise BackendError(f"{self.name}: {self.backend} runner used {when}; use it inside `with runner:` "
                               "(or call activate())")

    def _checked(self, images: Any) -> Any:
        """`images` if it is what the bundle takes; a one-line error naming the runner otherwise."""
        self._check_state()
        shape = tuple(int(d) for d in getattr(images, "shape", ()))
        want = self.input_shape
        if want is None:  # no bundle shape given: the artifact's own, where it has fixed dims
            spec = getattr(self, "_spec", None) or {}
            dims = spec.get("shape") or []
            want = tuple(int(d) for d in dims[1:]) if dims and all(isinstance(d, int) and d > 0 for d in dims[1:]) \
                else None
        if len(shape) != 4 or (want is not None and shape[1:] != want):
            exp = f"[N, {', '.join(map(str, want))}]" if want else "[N, C, H, W]"
            raise BackendError(f"{self.name}: input of shape {list(shape)}, the bundle takes {exp} float32; "
                               "pass cutouts with the bundle's bands and size (lenstrt serve matches them)")
        dtype = str(getattr(images, "dtype", ""))
        if dtype not in ("float32", "torch.float32"):
            raise BackendError(f"{self.name}: input dtype {dtype or type(images).__name__}, the bundle takes "
                               "float32; convert with .astype(numpy.float32)")
        return images

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
