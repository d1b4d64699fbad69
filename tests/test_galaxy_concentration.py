"""benchmarks/galaxy_concentration.py: how compact a set's plain galaxies are next to ours, and their scores."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import load_script

gc = load_script(Path(__file__).resolve().parents[1] / "benchmarks" / "galaxy_concentration.py", "galaxy_concentration")


def test_concentration_by_hand():
    # 32 px at 0.2": centre (15.5, 15.5). The 4 central pixels are 0.14" out (inside 0.6"); a pixel at (15, 29) is
    # 2.7" out (inside 3"); one at (0, 0) 4.4" (outside both); a NaN inside 0.6" counts as nothing.
    x = np.zeros((3, 32, 32))
    x[0, 15:17, 15:17] = 10.0
    x[0, 15, 29], x[0, 0, 0], x[0, 15, 19] = 40.0, 1000.0, 20.0  # (15, 19): 0.71" out, inside 3" only
    x[1, 15:17, 15:17] = 10.0
    x[1, 16, 16] = np.nan
    c = gc.concentration(x, 0.2)
    assert c[0] == pytest.approx(40 / 100) and c[1] == pytest.approx(1.0)
    assert np.isnan(c[2])  # no light within 3": no ratio, not a division error
    assert gc.concentration(x, 0.4)[0] == pytest.approx(40 / 60)  # at 0.4"/px (15, 29) is 5.4" out, (15, 19) 1.4"


def test_table_counts_ratios_past_either_end_and_skips_nan():
    # noise can push a faint galaxy's ratio below 0 or above 1: the end bins hold them; no ratio (NaN) counts nowhere
    text = gc.table(np.array([-0.1, 0.1, 1.2, np.nan]), np.array([0.5, 0.5]), None, None)
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in text.splitlines() if line.startswith("| 0")}
    assert rows["0-0.25"][0] == "0.500" and rows["0.45-1"][:2] == ["0.250", "1.000 |"]


def _set(tmp_path, conc, kinds):
    """Cutouts whose i band has the given light within 0.6" over 3" (the g, r bands empty)."""
    from lenstrt.data.shards import write_shard

    n = len(conc)
    x = np.zeros((n, 3, 32, 32), np.float32)
    x[:, 2, 15:17, 15:17] = (np.asarray(conc) * 100 / 4)[:, None, None]
    x[:, 2, 15, 29] = 100 * (1 - np.asarray(conc))  # 2.7" out
    write_shard(tmp_path / "shard-00000.h5",
                {"images": x, "labels": np.array([k == b"lens" for k in kinds], np.int8),
                 "ids": np.array([f"c{i}".encode() for i in range(n)]), "kind": np.array(kinds, dtype="S9")},
                {"survey": "t", "bands": json.dumps(["g", "r", "i"]), "pixel_scale": 0.2})
    return tmp_path / "shard-00000.h5"


def test_main_bins_the_set_and_its_scores(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    # 100 galaxies: 50 diffuse (0.2) scored 0.1; 49 compact (0.5): one 0.9, two 0.6, the rest 0.3; one at 0.25
    # exactly (a bin's lower edge: in the bin above it) scored 0.3; 1 lens (0.99)
    conc = [0.2] * 50 + [0.5] * 49 + [0.25] + [0.5]
    data = _set(tmp_path, conc, [b"galaxy"] * 100 + [b"lens"])
    scores = [0.1] * 50 + [0.9, 0.6, 0.6] + [0.3] * 46 + [0.3] + [0.99]
    pq.write_table(pa.table({"id": [f"c{i}" for i in range(101)], "score": scores}), tmp_path / "scores.parquet")
    gc.main(["--data", str(data), "--scores", str(tmp_path / "scores.parquet"), "--n", "20"])
    out = capsys.readouterr().out
    assert "100 galaxy cutouts; ours: 20 from lsst-gri; FPR 1e-2 threshold p >= 0.9000" in out
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in out.splitlines() if line.startswith("| 0")}
    assert [rows[k][0] for k in ("0-0.25", "0.25-0.3", "0.3-0.35", "0.45-1")] == ["0.500", "0.010", "0.000", "0.490"]
    # FPR 1e-2 of 100 non-lenses lets one through (the 0.9): 1 of the 49 compact ones; p > 0.5: 3 of them
    assert rows["0.45-1"][2:] == ["0.061", "0.020 |"] and rows["0-0.25"][2:] == ["0.000", "0.000 |"]
    ours = sum(float(r[1]) for r in rows.values())
    assert ours == pytest.approx(1.0, abs=0.01)  # every one of our 20 galaxies falls in a bin


@pytest.mark.parametrize("args, says", [
    (["--kind", "companion"], "no cutouts of kind 'companion'"),
    (["--set", "lens_brightness=1,2"], "not a population key"),
    (["--set", "negative_mix=1,2"], "not a population key of a preset that takes LO,HI"),
    (["--survey", "no-such-survey"], "no-such-survey"),
    (["--scores", "MISSING"], "not a scores.parquet"),
])
def test_bad_input_ends_in_one_clear_line(tmp_path, args, says, capsys):
    data = _set(tmp_path, [0.2, 0.5], [b"galaxy", b"lens"])
    args = [a.replace("MISSING", str(tmp_path / "missing.parquet")) for a in args]
    with pytest.raises(SystemExit) as e:
        gc.main(["--data", str(data), "--n", "5", *args])
    assert e.value.code == 2 and says in capsys.readouterr().err


def test_a_set_without_kinds_is_refused_in_one_line(tmp_path, capsys):
    from lenstrt.data.shards import write_shard

    write_shard(tmp_path / "shard-00000.h5", {"images": np.zeros((2, 3, 32, 32), np.float32),
                                              "labels": np.zeros(2, np.int8), "ids": np.array([b"a", b"b"])},
                {"survey": "t", "bands": json.dumps(["g", "r", "i"]), "pixel_scale": 0.2})
    with pytest.raises(SystemExit) as e:
        gc.main(["--data", str(tmp_path), "--n", "5"])
    assert e.value.code == 2 and "records no kind per cutout" in capsys.readouterr().err
