"""benchmarks/stratum_gap.py: our lenses next to lenstronomy's in one stratum of the quality bar."""

from pathlib import Path

import numpy as np
import pytest
from conftest import load_script

sg = load_script(Path(__file__).resolve().parents[1] / "benchmarks" / "stratum_gap.py", "stratum_gap")


def test_lens_stats_by_hand():
    # 8x8 pixels of 0.5": the centre is between pixels 3 and 4; a flat "lens" of 10 and an arc of 4 on two
    # pixels 1.58" out (rows 3-4, column 6), background sigma 1
    rest = np.full((3, 8, 8), 10.0)
    arc = np.zeros((3, 8, 8))
    arc[:, 3:5, 6] = 4.0
    arc[0] *= 2.0                       # twice the arc flux in g: bluer by 2.5 log10(2) at equal zero points
    zero = np.ones(3)
    s = sg.lens_stats(arc, rest, np.ones(3), zero, theta_e=1.58, pixel_scale=0.5)
    assert s["contrast_i"] == pytest.approx(0.4) and s["contrast_g"] == pytest.approx(0.8)
    assert s["npix_i"] == 2 and s["peak_ratio_i"] == pytest.approx(0.4)
    assert s["arc_r_over_te"] == pytest.approx(np.hypot(2.5 * 0.5, 0.5 * 0.5) / 1.58)
    assert s["arc_g_i"] == pytest.approx(-2.5 * np.log10(2.0))
    assert s["lens_g_i"] == pytest.approx(0.0)
    assert s["lens_sb_at_te_over_sigma"] == pytest.approx(10.0)
    # a zero point changes the colour by the difference of zero points, not the contrast
    s2 = sg.lens_stats(arc, rest, np.ones(3), np.array([2.0, 1.0, 1.0]), theta_e=1.58, pixel_scale=0.5)
    assert s2["arc_g_i"] == pytest.approx(s["arc_g_i"] + 2.5 * np.log10(2.0))
    assert s2["contrast_i"] == s["contrast_i"]


def test_both_simulators_give_lenses_in_the_stratum():
    te, snr = (0.5, 1.0), (20.0, 50.0)
    mine = sg.ours("lsst-gri", 4, 0, te, snr, {"lens_mag": (17.5, 21.0)})
    other = sg.theirs(3, 1, te, snr)
    import sys

    assert sys.modules["cross_sim"].THETA_E == (0.5, 3.5)  # the generator's own range is put back
    for rows in (mine, other):
        assert set(sg.STATS) <= set(rows[0])
        assert all(snr[0] * 0.98 <= r["snr"] <= snr[1] * 1.02 for r in rows)
        assert all(0 < r["contrast_i"] < 1 and r["npix_i"] > 0 for r in rows)
    text = sg.table(mine, other, ("ours", "theirs"))
    assert text.count("\n") == len(sg.STATS) + 1 and "| contrast_i |" in text
