"""HDF5 shards of cutouts: the format `simulate` writes and every reader accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lenstrt.io import atomic_path

SCHEMA = "lenstrt-shard/1"


# How the pixels are stored. At survey scale input bandwidth, not the GPU, sets the cost (docs/serve.md):
# float16 halves the bytes; Blosc+Zstd with byte shuffle (hdf5plugin) compresses what noise allows.
STORAGE = ("float32", "float16", "zstd", "float16-zstd")
FP16_MAX = 32768.0  # headroom below float16's 65504


def encode_images(images: np.ndarray, storage: str) -> tuple[np.ndarray, dict[str, Any], float]:
    """(array to store, h5py dataset options, scale). float16 stores images / scale with scale a power of
    two (exact, so only float16's own rounding is lost) that brings the largest |value| under 32768: raw
    fluxes reach 1e6 counts here. Readers multiply the scale back (the `scale` attribute of `images`)."""
    if storage not in STORAGE:
        from lenstrt.errors import ConfigError

        raise ConfigError(f"storage {storage!r}: choose one of {', '.join(STORAGE)}")
    opts: dict[str, Any] = {}
    scale = 1.0
    if storage.startswith("float16"):
        peak = float(np.nanmax(np.abs(images), initial=0.0))  # masked (NaN) pixels must not hide the peak
        if np.isfinite(peak) and peak > FP16_MAX:
            scale = float(2.0 ** np.ceil(np.log2(peak / FP16_MAX)))
        images = (images / np.float32(scale)).astype(np.float16)
    if storage.endswith("zstd"):
        import hdf5plugin

        opts.update(hdf5plugin.Blosc(cname="zstd", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE))
    return images, opts, scale


def write_shard(path: str | Path, arrays: dict[str, np.ndarray], attrs: dict[str, Any],
                storage: str = "float32") -> None:
    """Writes `arrays` (must include `images` [N, C, H, W]) atomically; byte-identical for equal input."""
    import h5py

    images, opts, scale = encode_images(arrays["images"], storage)
    n, c, h, w = images.shape
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", libver=("earliest", "v110"), track_order=False) as f:
            d = f.create_dataset("images", data=images, chunks=(min(64, max(n, 1)), c, h, w), track_times=False,
                                 **opts)
            if scale != 1.0:
                d.attrs["scale"] = scale
            f.attrs["storage"] = storage
            for key, arr in arrays.items():
                if key != "images":
                    f.create_dataset(key, data=arr, track_times=False)
            f.attrs["schema"] = SCHEMA
            for key, value in attrs.items():
                f.attrs[key] = value
