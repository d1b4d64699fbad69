"""HDF5 shards of cutouts: the format `simulate` writes and every reader accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lenstrt.io import atomic_path

SCHEMA = "lenstrt-shard/1"


def write_shard(path: str | Path, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> None:
    """Writes `arrays` (must include `images` [N, C, H, W]) atomically; byte-identical for equal input."""
    import h5py

    images = arrays["images"]
    n, c, h, w = images.shape
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", libver=("earliest", "v110"), track_order=False) as f:
            f.create_dataset("images", data=images, chunks=(min(64, max(n, 1)), c, h, w), track_times=False)
            for key, arr in arrays.items():
                if key != "images":
                    f.create_dataset(key, data=arr, track_times=False)
            f.attrs["schema"] = SCHEMA
            for key, value in attrs.items():
                f.attrs[key] = value
