"""Training data: in-memory cutouts with a deterministic, resumable batch order, or batches
simulated on the fly."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, Sampler


def data_hash(paths: list[Path]) -> str:
    """Hash of the training data listing: file names, sizes and row counts."""
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(f"{p.name}:{p.stat().st_size}".encode())
    return h.hexdigest()[:16]


class InMemoryCutouts(Dataset):
    """Batched access: the DataLoader hands a list of indices to __getitems__ (no per-item collate)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.labels = torch.from_numpy(labels.astype(np.float32))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], self.labels[i]

    def __getitems__(self, idx):
        t = torch.as_tensor(idx)
        return self.images[t], self.labels[t]


class ResumableBatches(Sampler):
    """Infinite stream of index batches: epoch e is a permutation seeded by (seed, e); starting at
    `start_step` reproduces exactly the batches an uninterrupted run would have drawn.

    Under DDP every rank draws the same global batch of `batch_size x world` rows and keeps its own
    slice, so N ranks see exactly what one process with an N-times batch would see."""

    def __init__(self, n: int, batch_size: int, seed: int, start_step: int = 0, rank: int = 0, world: int = 1):
        self.n, self.bs, self.seed, self.start = n, batch_size * world, seed, start_step
        self.rank, self.part = rank, batch_size
        self.steps_per_epoch = max(1, n // self.bs)

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start
        while True:
            epoch, pos = divmod(step, self.steps_per_epoch)
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            perm = torch.randperm(self.n, generator=g)
            for p in range(pos, self.steps_per_epoch):
                a = p * self.bs + self.rank * self.part
                yield perm[a:a + self.part].tolist()
                step += 1

    def __len__(self) -> int:  # pragma: no cover - infinite
        return 2**62


def collate_batched(batch):
    return batch


class SimulatedStream(IterableDataset):
    """Endless (images, labels) batches from the simulator; each worker gets its own seed stream."""

    def __init__(self, survey: str, batch_size: int, seed: int, image_size: int | None = None,
                 lens_fraction: float = 0.5, rank: int = 0):
        self.survey, self.bs, self.seed, self.size, self.frac = survey, batch_size, seed, image_size, lens_fraction
        self.rank = rank

    def __iter__(self):
        from lenstrt.data.simulate import simulate_arrays
        from lenstrt.data.simulate.presets import load_survey

        info = torch.utils.data.get_worker_info()
        wid = info.id if info else 0
        survey = load_survey(self.survey, self.size)
        rng = np.random.default_rng([self.seed, 1_000_003, wid] + ([self.rank] if self.rank else []))
        torch.set_num_threads(1)
        while True:
            a = simulate_arrays(survey, self.bs, rng, self.frac, filled=True)
            yield torch.from_numpy(a["images"]), torch.from_numpy(a["labels"].astype(np.float32))


def augment(x: torch.Tensor, step: int, seed: int, part: tuple[int, int] = (0, 1),
            band_jitter: float = 0.0) -> torch.Tensor:
    """The 8 flips/90-degree rotations and flux scaling 0.8-1.2 (and, with `band_jitter` j, each band's
    flux times 1 + U(-j, j)), seeded by (seed, step) so a resumed run draws the same augmentations.
    `part` (rank, world): the draws are made for the global batch
    and this rank takes its slice, so N ranks augment as one process with the N-times batch would.

    The draws come from a CPU generator whatever the batch's device, so a run augments identically on
    a CPU and a GPU; the index tensors stay on the CPU (indexing a CUDA tensor with them is fine) and
    the scale factors move to the batch's device before they meet it."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    n = x.shape[0]
    rank, world = part
    code = torch.randint(0, 8, (n * world,), generator=g)[rank * n:(rank + 1) * n]
    scale = (0.8 + 0.4 * torch.rand(n * world, generator=g))[rank * n:(rank + 1) * n].to(device=x.device, dtype=x.dtype)
    out = torch.empty_like(x)
    for c in range(8):
        sel = (code == c).nonzero().squeeze(1)
        if sel.numel() == 0:
            continue
        v = x[sel]
        if c & 4:
            v = v.flip(-1)
        out[sel] = torch.rot90(v, k=c & 3, dims=(-2, -1))
    factor = scale[:, None]  # (n, 1): one flux scale per cutout, or (n, bands) with band_jitter
    if band_jitter:  # drawn after the others, so runs without it augment exactly as before
        gain = 1 + band_jitter * (2 * torch.rand(n * world, x.shape[1], generator=g) - 1)
        factor = factor * gain[rank * n:(rank + 1) * n].to(device=x.device, dtype=x.dtype)
    return out * factor[:, :, None, None]
