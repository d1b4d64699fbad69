"""benchmarks/field_objects.py: completeness with and without a bright source away from the centre."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "field_objects.py"


fo = load_script(SCRIPT, "field_objects")


def _images(n: int, star_at: dict[int, tuple[int, int]]) -> np.ndarray:
    x = np.random.default_rng(0).normal(0, 1, (n, 3, 32, 32)).astype(np.float32)
    x[:, :, 14:18, 14:18] += 500.0  # every cutout has a bright centre: never a field object
    for i, (r, c) in star_at.items():
        x[i, 2, r, c] += 100.0
    return x


def test_bright_field_looks_only_beyond_the_radius_and_above_the_threshold():
    # 32 px at 0.2"/px: the centre is (15.5, 15.5); (15, 30) is 2.9" out, (15, 26) 2.1"
    x = _images(4, {1: (15, 30), 2: (15, 26)})
    x[3, 2, 15, 30] += 5.0  # ~5 sigma: below a 30-sigma threshold
    assert fo.bright_field(x, 0.2, 2.5, 30.0, band=-1).tolist() == [False, True, False, False]
    assert fo.bright_field(x, 0.2, 2.0, 30.0, band=-1).tolist() == [False, True, True, False]
    assert not fo.bright_field(x, 0.2, 2.0, 30.0, band=0).any()  # the stars are in the last band only


def test_main_splits_the_scores_by_field_object(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lenstrt.data.shards import write_shard

    # 8 lenses at S/N 150 (4 beside a star: scored 0.2; 4 not: 0.9), 4 companions (2 beside a star)
    n = 12
    x = _images(n, {0: (15, 30), 1: (15, 30), 2: (2, 2), 3: (29, 15), 8: (15, 30), 9: (2, 2)})
    labels = np.array([1] * 8 + [0] * 4, np.int8)
    kinds = np.array([b"lens"] * 8 + [b"companion"] * 4, dtype="S9")
    ids = np.array([f"c{i}".encode() for i in range(n)])
    write_shard(tmp_path / "shard-00000.h5",
                {"images": x, "labels": labels, "ids": ids, "kind": kinds,
                 "theta_e": np.where(labels == 1, 1.2, 0.0).astype(np.float32),
                 "arc_snr": np.where(labels == 1, 150.0, 0.0).astype(np.float32)},
                {"survey": "t", "bands": json.dumps(["g", "r", "i"]), "pixel_scale": 0.2})
    scores = np.array([0.2] * 4 + [0.9] * 4 + [0.6, 0.1, 0.1, 0.1], np.float32)
    pq.write_table(pa.table({"id": [f"c{i}" for i in range(n)], "score": scores}), tmp_path / "scores.parquet")
    fo.main(["--data", str(tmp_path / "shard-00000.h5"), "--scores", str(tmp_path / "scores.parquet"),
             "--radius", "2.5"])
    out = capsys.readouterr().out
    assert "| 100-300 | 8 | 50% | 0.000 / 1.000 |" in out
    assert "companion: p > 0.5 with / without a bright field object 0.500 / 0.000 (n 2 / 2)" in out
    # lenses with one (0.2) vs companions (0.6, 0.1 x3): 3 of 4 pairs; without one (0.9): all
    assert "lens vs companion AUROC, lenses with / without one: 0.750 / 1.000" in out
    # a missing or foreign scores file, and scores of another set, are refused in one line
    with pytest.raises(SystemExit, match="not a scores.parquet from `lenstrt evaluate`"):
        fo.main(["--data", str(tmp_path / "shard-00000.h5"), "--scores", str(tmp_path / "missing.parquet")])
    pq.write_table(pa.table({"id": ["x"] * n, "score": scores}), tmp_path / "other.parquet")
    with pytest.raises(SystemExit, match="not those of"):
        fo.main(["--data", str(tmp_path / "shard-00000.h5"), "--scores", str(tmp_path / "other.parquet")])
