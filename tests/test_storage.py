"""Cutout storage (issue #14): float16 and Blosc/Zstd-compressed shards read natively and score like
float32 (zstd bit for bit; float16 within its rounding)."""

import numpy as np
import pytest

from lenstrt.data.readers import CutoutFile, load_all
from lenstrt.data.shards import STORAGE, encode_images, write_shard
from lenstrt.errors import ConfigError


@pytest.fixture(scope="module")
def cutouts(sim_dir):
    return load_all(sorted(sim_dir.glob("*.h5")))


def test_float16_scale_is_a_power_of_two_that_fits(cutouts):
    x = cutouts["images"]
    enc, _, scale = encode_images(x, "float16")
    assert enc.dtype == np.float16 and np.isfinite(enc).all()
    assert scale == 1.0 or (np.log2(scale) == int(np.log2(scale)) and np.abs(x).max() / scale <= 32768)
    assert encode_images(np.ones((1, 1, 2, 2), np.float32), "float16")[2] == 1.0
    masked = np.array([[[[np.nan, 1e6], [3.0, -2e5]]]], np.float32)  # a masked pixel next to a bright star
    enc, _, scale = encode_images(masked, "float16")
    assert scale == 32.0 and np.isnan(enc[0, 0, 0, 0]) and enc[0, 0, 0, 1] * scale == 1e6
    with pytest.raises(ConfigError, match="storage 'bf16'"):
        encode_images(x, "bf16")


@pytest.mark.parametrize("storage", STORAGE)
def test_every_storage_scores_like_float32(cutouts, bundle_dir, tmp_path, storage):
    from lenstrt.bundle import Bundle
    from lenstrt.runtime.select import build_ensemble

    p = tmp_path / f"{storage}.h5"
    write_shard(p, {"images": cutouts["images"], "labels": cutouts["labels"]}, {"bands": '["g", "r", "i"]'},
                storage=storage)
    with CutoutFile(p) as f:
        got = f.read(0, f.n).images
    ref = cutouts["images"]
    assert got.dtype == np.float32
    if storage in ("float32", "zstd"):
        np.testing.assert_array_equal(got, ref)
    else:
        np.testing.assert_allclose(got, ref, rtol=2 ** -10, atol=np.abs(ref).max() * 2 ** -11)
    with build_ensemble(Bundle(bundle_dir), "ort", "cpu") as e:
        s_ref, s_got = e.infer(ref).score, e.infer(got).score
    tol = 0 if storage in ("float32", "zstd") else 1e-2
    assert np.abs(s_got - s_ref).max() <= tol
