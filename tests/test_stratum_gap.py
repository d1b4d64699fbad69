"""benchmarks/stratum_gap.py: our lenses next to lenstronomy's in one stratum of the quality bar."""

from pathlib import Path

import numpy as np
import pytest
from conftest import load_script

sg = load_script(Path(__file__).resolve().parents[1] / "benchmarks" / "stratum_gap.py", "stratum_gap")


def test_lens_stats_by_hand():
    # 8x8 pixels of 0.5": pixel centres at -1.75 ... 1.75". A lens of 10 with a core of 50 (the 4 central pixels,
    # r = 0.35"); an arc of 4 (i) and 8 (g) on two pixels at (1.25", +-0.25"), r = 1.27"; in the corner (r = 2.47",
    # outside the 2" aperture) arc light exactly at the i background sigma (not above it) and just above g's.
    rest = np.full((3, 8, 8), 10.0)
    rest[:, 3:5, 3:5] = 50.0
    arc = np.zeros((3, 8, 8))
    arc[2, 3:5, 6], arc[0, 3:5, 6] = 4.0, 8.0
    arc[2, 0, 0], arc[0, 0, 0] = 1.0, 0.6
    sigma = np.array([0.5, 1.0, 1.0])
    s = sg.lens_stats(arc, rest, sigma, np.ones(3), theta_e=1.58, pixel_scale=0.5, fwhm_i=0.7)
    assert s["npix_i"] == 2                                       # the corner is not above i's sigma
    assert s["contrast_i"] == pytest.approx(8 / 20)
    assert s["contrast_g"] == pytest.approx(16.6 / 30)           # the corner is above g's
    assert s["peak_ratio_i"] == pytest.approx(0.4)               # the rest where the arc peaks, not the core
    assert s["arc_over_lens_2as_i"] == pytest.approx(8 / (4 * 50 + 60 * 10 - 12 * 10))  # 12 pixels lie beyond 2"
    r_arc, r_corner = np.hypot(1.25, 0.25), np.hypot(1.75, 1.75)
    assert s["arc_r_over_te"] == pytest.approx((8 * r_arc + r_corner) / 9 / 1.58)
    assert s["arc_g_i"] == pytest.approx(-2.5 * np.log10(16.6 / 9))
    assert s["lens_g_i"] == pytest.approx(0.0)
    assert s["lens_sb_at_te_over_sigma"] == pytest.approx(10.0)  # the ring at 1.58" +- 0.15" misses the core
    assert s["lens_conc"] == pytest.approx((4 * 50 + 8 * 10) / (4 * 50 + 60 * 10))
    # a zero point changes the colour by the difference of zero points, not the contrast
    s2 = sg.lens_stats(arc, rest, sigma, np.array([2.0, 1.0, 1.0]), theta_e=1.58, pixel_scale=0.5, fwhm_i=0.7)
    assert s2["arc_g_i"] == pytest.approx(s["arc_g_i"] + 2.5 * np.log10(2.0))
    assert s2["contrast_i"] == s["contrast_i"]
    assert s["fwhm_i"] == 0.7


def test_arc_shape_by_hand():
    # 8x8 pixels of 0.5" (centres at -1.75 ... 1.75"). i-band arc, brightest first: 4 at (0.75", 0.75") (45 deg),
    # 3 at (1.75", 0.25") (8 deg: 37 from the peak), 2 at (-0.25", 1.75") (98 deg: 53 from it), 1 at (-1.75", 0.25")
    # (172 deg) and 1 at (-1.75", -0.25") (-172 deg), both more than 90 deg away: the counter-image; five 10-degree
    # sectors, the last two either side of 180 deg; radii 1.06" (the peak) and 1.77" (the rest). 0.5 at (-1.25", -1.25") is under the 1-sigma mask: not the arc.
    arc = np.zeros((3, 8, 8))
    for (x, y), v in {(0.75, 0.75): 4.0, (1.75, 0.25): 3.0, (-0.25, 1.75): 2.0, (-1.75, 0.25): 1.0,
                      (-1.75, -0.25): 1.0, (-1.25, -1.25): 0.5}.items():
        arc[2, int(y / 0.5 + 3.5), int(x / 0.5 + 3.5)] = v * 1.0001  # just above the 1-sigma mask
    s = sg.lens_stats(arc, np.full((3, 8, 8), 10.0), np.ones(3), np.ones(3), theta_e=1.0, pixel_scale=0.5, fwhm_i=0.5)
    assert s["counter_frac_i"] == pytest.approx(2 / 11)
    assert s["arc_span_deg"] == 50
    r = np.hypot([0.75, 1.75, 0.25, 1.75, 1.75], [0.75, 0.25, 1.75, 0.25, 0.25])  # 1.06" and 1.77"
    w = np.array([4.0, 3.0, 2.0, 1.0, 1.0])
    mean = (w * r).sum() / w.sum()
    assert s["arc_dr_over_fwhm"] == pytest.approx(np.sqrt((w * (r - mean) ** 2).sum() / w.sum()) / 0.5)
    # a sector needs 5% of the flux: with i's sigma at 0.1 the 0.5 pixel joins the mask (0.5 / 11.5 = 4.3%: no new
    # sector, but a counter-image share), at 0.9 (8%) it adds one
    sigma = np.array([1.0, 1.0, 0.1])
    s = sg.lens_stats(arc, np.full((3, 8, 8), 10.0), sigma, np.ones(3), 1.0, 0.5, 0.5)
    assert s["arc_span_deg"] == 50 and s["counter_frac_i"] == pytest.approx(2.5 / 11.5)
    arc[2, 1, 1] = 0.9
    assert sg.lens_stats(arc, np.full((3, 8, 8), 10.0), sigma, np.ones(3), 1.0, 0.5, 0.5)["arc_span_deg"] == 60


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


@pytest.mark.parametrize("args, says", [
    (["--set", "lens_mag=17.5"], "give two numbers"),
    (["--set", "lens_mag"], "give KEY=LO,HI"),
    (["--set", "lens_brightness=17,21"], "not a population key"),
    (["--survey", "no-such-survey", "--n", "1"], "no-such-survey"),
    (["--survey", "euclid-vis", "--n", "1"], "needs g, r and i"),
])
def test_bad_arguments_end_in_one_clear_line(args, says, capsys):
    with pytest.raises(SystemExit) as e:
        sg.main(args)
    assert e.value.code == 2 and says in capsys.readouterr().err
