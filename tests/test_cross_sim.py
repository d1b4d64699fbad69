"""benchmarks/cross_sim.py: the lenstronomy-made cross-simulator evaluation set (docs/cross_sim.md)."""

import ast
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import load_script

pytest.importorskip("lenstronomy", reason="lenstronomy is in the dev extra")

pytestmark = pytest.mark.filterwarnings("ignore:`axes` should not be:DeprecationWarning")  # lenstronomy
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "cross_sim.py"


xs = load_script(SCRIPT, "cross_sim")


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    out = tmp_path_factory.mktemp("xsim")
    return out, xs.make(24, seed=7, out=out, shard_size=12, progress=False)


def test_make_writes_a_set_our_readers_load(made):
    from lenstrt.data.readers import load_all

    out, meta = made
    assert sorted(p.name for p in out.glob("*.h5")) == ["shard-00000.h5", "shard-00001.h5"]
    assert json.loads((out / "dataset.json").read_text())["kinds"] == meta["kinds"]
    # 24 * 0.4 -> 10 lenses; 14 negatives split 40/30/15/15 by largest remainder
    assert meta["kinds"] == {"lens": 10, "galaxy": 4, "companion": 6, "group": 2, "edgeon": 2}
    d = load_all(out, extra=("theta_e", "arc_snr", "kind"))
    assert d["images"].shape == (24, 3, 64, 64) and d["images"].dtype == np.float32
    assert np.isfinite(d["images"]).all()
    kind = d["kind"].astype(str)
    assert set(kind) == set(xs.KINDS)
    lens = kind == "lens"
    np.testing.assert_array_equal(d["labels"], lens.astype(d["labels"].dtype))
    assert ((d["theta_e"][lens] >= 0.5) & (d["theta_e"][lens] <= 3.5)).all()
    assert (d["arc_snr"][lens] >= 10).all()
    assert (d["theta_e"][~lens] == 0).all() and (d["arc_snr"][~lens] == 0).all()
    assert len(set(d["ids"])) == 24 and str(d["ids"][0]).endswith("xsim-s7-000000000")
    with h5py.File(out / "shard-00000.h5") as f:
        assert json.loads(f.attrs["bands"]) == ["g", "r", "i"]
        assert f.attrs["simulator"].startswith("lenstronomy ")


def _image_digest(out: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(out.glob("shard-*.h5")):
        with h5py.File(p) as f:
            h.update(f["images"][...].tobytes())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        xs.make(6, seed=seed, out=tmp_path / name, shard_size=3, progress=False)
    assert _image_digest(tmp_path / "a") == _image_digest(tmp_path / "b")
    assert _image_digest(tmp_path / "a") != _image_digest(tmp_path / "c")
    assert (tmp_path / "a" / "shard-00001.h5").read_bytes() == (tmp_path / "b" / "shard-00001.h5").read_bytes()


def test_arc_snr_by_hand():
    arc = np.array([[[3.0, 1.0], [0.5, 2.0]],   # sigma 1: pixels 3 and 2 (1 is not above 1 sigma)
                    [[0.2, 4.0], [0.0, 0.0]],   # sigma 0.5: pixel 4 only
                    [[0.0, 0.0], [0.0, 0.0]]])  # no arc: contributes nothing
    var = np.array([[[5.0, 9.0], [9.0, 4.0]],
                    [[1.0, 16.0], [1.0, 1.0]],
                    [[1.0, 1.0], [1.0, 1.0]]])
    # band g: (3 + 2) / sqrt(5 + 4) = 5/3; band r: 4 / sqrt(16) = 1; total sqrt(25/9 + 1) = sqrt(34) / 3
    assert xs.arc_snr(arc, var, [1.0, 0.5, 1.0]) == pytest.approx(np.sqrt(34) / 3, rel=1e-12)
    assert xs.arc_snr(arc[:2], var[:2], [10.0, 10.0]) == 0.0


def test_independent_of_lenstrt_simulator(tmp_path):
    tree = ast.parse(SCRIPT.read_text())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
    assert names and not [m for m in names if m.startswith("lenstrt.data.simulate")]
    code = ("import importlib.util, sys\n"
            f"s = importlib.util.spec_from_file_location('cross_sim', {str(SCRIPT)!r})\n"
            "m = importlib.util.module_from_spec(s); s.loader.exec_module(m)\n"
            f"m.make(2, 1, {str(tmp_path / 'x')!r}, progress=False)\n"
            "print(sorted(k for k in sys.modules if k.startswith('lenstrt')))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = res.stdout.strip()
    assert "lenstrt.data.shards" in loaded and "lenstrt.data.simulate" not in loaded
