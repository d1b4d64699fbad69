"""`lenstrt evaluate`'s strata, per-kind numbers, quality bar, report and comparison (issue #15): the pure
functions against numbers worked by hand, then the command end to end on a hand-made two-member
checkpoint (untrained: the plumbing is under test here, the numbers above)."""

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from lenstrt import metrics as M
from lenstrt.train import evaluate as E

OPS = ("fpr=1e-2", "fpr=1e-3")


def test_wilson_interval_by_hand():
    # 8/10, z=1: centre (8 + 1/2)/(10 + 1) = 0.772727; half-width sqrt(8*2/10 + 1/4)/11 = sqrt(1.85)/11 = 0.123650
    assert M.wilson_interval(8, 10) == pytest.approx((0.649077, 0.896377), abs=1e-6)
    # 3/4: centre 3.5/5 = 0.7, half-width sqrt(3/4 + 1/4)/5 = 0.2
    assert M.wilson_interval(3, 4) == pytest.approx((0.5, 0.9), abs=1e-12)
    # 0/4: centre 0.5/5 = 0.1, half-width sqrt(0 + 1/4)/5 = 0.1; and the mirror image
    assert M.wilson_interval(0, 4) == pytest.approx((0.0, 0.2), abs=1e-12)
    assert M.wilson_interval(4, 4) == pytest.approx((0.8, 1.0), abs=1e-12)
    # one trial is a stratum too: centre (1 + 1/2) / 2 = 0.75, half 1/2 sqrt(0 + 1/4) = 0.25
    assert M.wilson_interval(1, 1) == pytest.approx((0.5, 1.0), abs=1e-12)
    # z=2, 1/2: centre (1 + 2)/(2 + 4) = 0.5, half-width 2/6 * sqrt(1/2 + 1) = 0.408248
    assert M.wilson_interval(1, 2, z=2.0) == pytest.approx((0.091752, 0.908248), abs=1e-6)
    assert all(math.isnan(x) for x in M.wilson_interval(0, 0))


def test_bins_are_half_open_with_under_and_over_bins():
    v = [0.49, 0.5, 0.99, 1.0, 2.4999, 2.5, 3.49, 3.5, 10.0, float("nan")]
    assert M.bin_index(v, E.THETA_E_EDGES).tolist() == [0, 1, 1, 2, 4, 5, 5, 6, 6, -1]
    assert M.bin_labels(E.THETA_E_EDGES, "{:.1f}") == ["<0.5", "0.5-1.0", "1.0-1.5", "1.5-2.0", "2.0-2.5", "2.5-3.5",
                                                      ">=3.5"]
    assert M.bin_index([0, 9.99, 10, 19.99, 20, 50, 99, 100, 199, 200, 1e6], E.ARC_SNR_EDGES).tolist() == \
        [0, 0, 1, 1, 2, 3, 3, 4, 4, 5, 5]
    assert M.bin_labels(E.ARC_SNR_EDGES) == ["<10", "10-20", "20-50", "50-100", "100-200", ">=200"]


def test_auroc_of_lenses_vs_one_kind_with_ties_by_hand():
    lens, comp = [0.9, 0.5, 0.3], [0.5, 0.2, 0.9]
    # pairs a lens wins (1) or ties (1/2): 0.9 vs (0.5, 0.2, 0.9) = 2.5; 0.5 vs ... = 1.5; 0.3 vs ... = 1 -> 5/9
    assert M.roc_auc_vs(lens, comp) == pytest.approx(5 / 9, abs=1e-12)
    assert M.roc_auc_vs([1.0, 1.0], [1.0]) == pytest.approx(0.5)
    assert math.isnan(M.roc_auc_vs([], [0.1]))


# 12 lenses: (theta_e, arc_snr, p) with values on bin edges and scores on the thresholds (0.5 and 0.8)
TWELVE = np.array([
    (0.4, 5, 0.9),      # <0.5, <10: both
    (0.5, 10, 0.5),     # 0.5-1.0, 10-20: 1e-2 only (p == threshold counts)
    (0.99, 19.9, 0.49),  # 0.5-1.0, 10-20: neither
    (1.0, 20, 0.8),     # 1.0-1.5, 20-50: both
    (1.2, 25, 0.79),    # 1.0-1.5, 20-50: 1e-2 only
    (1.49, 49, 0.1),    # 1.0-1.5, 20-50: neither
    (1.5, 50, 0.95),    # 1.5-2.0, 50-100: both
    (2.0, 100, 0.6),    # 2.0-2.5, 100-200: 1e-2 only
    (2.5, 200, 0.99),   # 2.5-3.5, >=200: both
    (3.49, 1000, 0.3),  # 2.5-3.5, >=200: neither
    (3.5, 30, 0.7),     # >=3.5, 20-50: 1e-2 only
    (1.1, 22, 0.51),    # 1.0-1.5, 20-50: 1e-2 only
])


def test_strata_on_twelve_lenses_by_hand():
    st = E.strata(TWELVE[:, 0], TWELVE[:, 1], TWELVE[:, 2], {"fpr=1e-2": 0.5, "fpr=1e-3": 0.8})
    got = {b["bin"]: (b["n"], b["fpr=1e-2"]["detected"], b["fpr=1e-3"]["detected"]) for b in st["theta_e"]}
    assert got == {"<0.5": (1, 1, 1), "0.5-1.0": (2, 1, 0), "1.0-1.5": (4, 3, 1), "1.5-2.0": (1, 1, 1),
                   "2.0-2.5": (1, 1, 0), "2.5-3.5": (2, 1, 1), ">=3.5": (1, 1, 0)}
    got = {b["bin"]: (b["n"], b["fpr=1e-2"]["detected"], b["fpr=1e-3"]["detected"]) for b in st["arc_snr"]}
    assert got == {"<10": (1, 1, 1), "10-20": (2, 1, 0), "20-50": (5, 4, 1), "50-100": (1, 1, 1),
                   "100-200": (1, 1, 0), ">=200": (2, 1, 1)}
    assert st["theta_e"][0]["range"] == [None, 0.5] and st["arc_snr"][-1]["range"] == [200.0, None]
    cells = {(c["theta_e"], c["arc_snr"]): c for c in st["theta_e_x_arc_snr"]}
    assert len(cells) == 7 * 6 and sum(c["n"] for c in cells.values()) == 12
    assert {k: c["n"] for k, c in cells.items() if c["n"]} == {
        ("<0.5", "<10"): 1, ("0.5-1.0", "10-20"): 2, ("1.0-1.5", "20-50"): 4, ("1.5-2.0", "50-100"): 1,
        ("2.0-2.5", "100-200"): 1, ("2.5-3.5", ">=200"): 2, (">=3.5", "20-50"): 1}
    c = cells[("1.0-1.5", "20-50")]["fpr=1e-2"]
    assert c["detected"] == 3 and c["completeness"] == 0.75 and c["ci68"] == pytest.approx([0.5, 0.9])
    empty = cells[("1.5-2.0", "<10")]
    assert empty["n"] == 0 and empty["fpr=1e-2"] == {"detected": 0, "completeness": None, "ci68": None}
    # an unreachable threshold (no score clears it) detects nothing
    none = E.strata(TWELVE[:, 0], None, TWELVE[:, 2], {"fpr=1e-2": float("inf")})
    assert "arc_snr" not in none and "theta_e_x_arc_snr" not in none
    assert sum(b["fpr=1e-2"]["detected"] for b in none["theta_e"]) == 0


def test_operating_thresholds_and_negatives_by_hand():
    # 100 non-lenses scored 0.00..0.99; lenses 1.0, 0.99 (tied with a non-lens), 0.985, 0.98, 0.5
    neg = np.arange(100) / 100
    lens = np.array([1.0, 0.99, 0.985, 0.98, 0.5])
    labels = np.r_[np.zeros(100, int), np.ones(5, int)]
    probs = np.r_[neg, lens]
    thr = E.operating_thresholds(labels, probs)
    # FPR 1e-2 allows 1 non-lens: at 0.98 two (0.98, 0.99) pass, so the lowest allowed threshold is 0.985
    assert thr["fpr=1e-2"]["threshold"] == 0.985 and thr["fpr=1e-2"]["fpr"] == 0.01
    assert thr["fpr=1e-2"]["tpr"] == pytest.approx(0.6) == M.tpr_at_fpr(labels, probs, 1e-2)
    assert thr["fpr=1e-2"]["resolved"] is True
    # FPR 1e-3 cannot be measured on 100 non-lenses: the zero-false-positive threshold (1.0)
    assert thr["fpr=1e-3"]["threshold"] == 1.0 and thr["fpr=1e-3"]["fpr"] == 0.0
    assert thr["fpr=1e-3"]["resolved"] is False and thr["fpr=1e-3"]["tpr"] == pytest.approx(0.2)

    # kinds come from the data; a kind spelled like a lens but labelled 0 is a negative kind too
    kinds = np.array(["galaxy"] * 60 + ["companion"] * 30 + ["group"] * 9 + ["ring"] + ["lens"] * 5)
    cut = {"fpr=1e-2": 0.985, "fpr=1e-3": 1.0}
    neg_ = E.negatives(labels, probs, kinds, cut)
    assert list(neg_) == ["companion", "galaxy", "group", "ring"]
    assert neg_["ring"] == {"n": 1, "false_positives": {"fpr=1e-2": 1, "fpr=1e-3": 0},
                            "false_positive_rate": {"fpr=1e-2": 1.0, "fpr=1e-3": 0.0},
                            # lenses (1.0, 0.99, 0.985, 0.98, 0.5) vs 0.99: 1 win + 1 tie -> 1.5/5
                            "auroc_vs_lens": pytest.approx(1.5 / 5)}
    assert neg_["group"]["n"] == 9 and neg_["group"]["false_positives"] == {"fpr=1e-2": 0, "fpr=1e-3": 0}
    # companions score 0.60..0.89: four lenses beat all 30, the 0.5 lens none -> 120/150
    assert neg_["companion"]["auroc_vs_lens"] == pytest.approx(4 / 5)
    # galaxies 0.00..0.59: four lenses beat all 60; 0.5 beats 0.00..0.49 (50) and ties 0.50 (1/2)
    assert neg_["galaxy"]["auroc_vs_lens"] == pytest.approx((4 * 60 + 50.5) / 300)


def test_completeness_of_all_strata_equals_tpr_at_fpr_with_ties():
    rng = np.random.default_rng(3)
    labels = (rng.random(3000) < 0.3).astype(int)
    probs = np.round(np.clip(rng.normal(0.35 + 0.4 * labels, 0.2), 0, 1), 2)  # many ties
    cut = {n: E.threshold_at_fpr(labels, probs, f) for n, f in E.STRATA_FPRS.items()}
    lens = labels == 1
    st = E.strata(rng.uniform(0.3, 4, lens.sum()), rng.uniform(1, 400, lens.sum()), probs[lens], cut)
    for op, f in E.STRATA_FPRS.items():
        det = sum(c[op]["detected"] for c in st["theta_e_x_arc_snr"])
        assert det / lens.sum() == pytest.approx(M.tpr_at_fpr(labels, probs, f), abs=1e-12)
        assert det == sum(b[op]["detected"] for b in st["theta_e"]) == sum(b[op]["detected"] for b in st["arc_snr"])


def _bar_set(n_pooled_hits: int = 11, cell_hits: int = 12):
    """Lenses: (1.0-1.5, 20-50) n=20 with `cell_hits` found; (1.5-2.0, 20-50) n=10 all found and
    (1.5-2.0, 50-100) n=10 with n_pooled_hits-10 found (each too small alone, n=20 pooled by theta_E);
    (0.5-1.0, 20-50) n=19 none found (too small); (2.0-2.5, 10-20) n=50 none found (below S/N 20)."""
    rows = ([(1.2, 30, i < cell_hits) for i in range(20)] + [(1.7, 30, True)] * 10
            + [(1.7, 60, i < n_pooled_hits - 10) for i in range(10)] + [(0.7, 30, False)] * 19
            + [(2.2, 15, False)] * 50)
    a = np.array(rows, dtype=float)
    st = E.strata(a[:, 0], a[:, 1], a[:, 2], {"fpr=1e-2": 0.5, "fpr=1e-3": 0.5})
    return {"label": "m", "m": {"tpr_at_fpr_1e-3": 0.85}, "strata": st,
            "negatives": {"companion": {"auroc_vs_lens": 0.97}},
            "thresholds": {"fpr=1e-3": {"resolved": True}}}


def test_quality_bar_checks_and_boundaries():
    res = _bar_set(n_pooled_hits=12)
    qb = E.quality_bar(res)
    assert [c["name"] for c in qb["checks"]] == ["stratum_completeness", "lens_vs_companion_auroc", "tpr_at_fpr_1e-3"]
    assert qb["pass"] is True and qb["failed"] == []  # 12/20 = 0.6, 0.97 and 0.85: all exactly at the bar
    s = qb["checks"][0]
    assert s["value"] == 0.6 and s["threshold"] == 0.6 and s["worst"]["n"] == 20
    # judged: the n=20 cell and the theta_E rows 1.0-1.5 and 1.5-2.0 pooled over S/N >= 20; not the 50
    # lenses at S/N 10-20 (none found), the 19-lens cell/row, nor the n=10 cells
    assert "0 of 3 strata" in s["detail"]
    # one lens fewer in the judged cell fails it; the pooled theta_E row is judged though its cells are small
    assert E.quality_bar(_bar_set(cell_hits=11, n_pooled_hits=12))["failed"] == ["stratum_completeness"]
    qb = E.quality_bar(_bar_set(n_pooled_hits=11))
    assert qb["failed"] == ["stratum_completeness"] and qb["checks"][0]["value"] == 0.55
    assert "theta_E 1.5-2.0, S/N >= 20" in qb["checks"][0]["detail"]
    # raising min_snr to 25 drops the 20-50 column: only the 50-100 cell (n=10) is left, too small
    assert E.quality_bar(_bar_set(n_pooled_hits=11), min_snr=25)["checks"][0]["pass"] is None
    assert E.quality_bar(_bar_set(n_pooled_hits=11), min_stratum_n=19)["checks"][0]["value"] == 0.0

    res = _bar_set(n_pooled_hits=12)
    res["m"]["tpr_at_fpr_1e-3"] = 0.8499
    res["negatives"]["companion"]["auroc_vs_lens"] = 0.9699
    assert E.quality_bar(res)["failed"] == ["lens_vs_companion_auroc", "tpr_at_fpr_1e-3"]
    del res["negatives"]["companion"], res["strata"]
    qb = E.quality_bar(res)
    assert [c["pass"] for c in qb["checks"]] == [None, None, False] and qb["failed"] == ["tpr_at_fpr_1e-3"]


def test_compare_report_tables():
    after = _bar_set(n_pooled_hits=12)
    after["m"] = {"roc_auc": 0.95, "tpr_at_fpr_1e-2": 0.9, "n": 100}
    after["negatives"] = {"companion": {"n": 30, "false_positive_rate": {"fpr=1e-2": 0.1, "fpr=1e-3": 0.0},
                                        "auroc_vs_lens": 0.97}}
    after["quality_bar"] = E.quality_bar(after)
    before = {"label": "old", "old": {"roc_auc": 0.9, "tpr_at_fpr_1e-2": 0.8, "n": 90}}  # pre-strata metrics.json
    md = E.compare_report(before, after)
    assert "| AUROC | 0.9000 | 0.9500 | +0.0500 |" in md
    assert "| n | 90 | 100 | +10 |" in md and "| TPR0 | — | — | — |" in md
    assert "| companion | AUROC lens vs kind | — | 0.9700 | — |" in md
    assert "| 1.0-1.5 | — | 0.600 (n=20) | — |" in md
    md = E.compare_report(after, after)
    assert "| 1.5-2.0 | 0.600 (n=20) | 0.600 (n=20) | +0.000 |" in md
    assert "| stratum_completeness | 0.6000 PASS | 0.6000 PASS | +0.0000 |" in md
    assert "different data" not in md


# -- end to end ----------------------------------------------------------------------------------------

# 100 non-lenses, so FPR 1e-2 is measurable; "group" and "edgeon": kinds evaluate must take from the data
KINDS = [b"lens"] * 40 + [b"galaxy"] * 60 + [b"companion"] * 25 + [b"group"] * 10 + [b"edgeon"] * 5


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A two-member 'run' of untrained vit_tiny checkpoints (32 px, gri) and 140 labelled cutouts with
    kind / theta_e / arc_snr and new negative kinds."""
    import torch

    from lenstrt import checkpoint as ck
    from lenstrt.data.shards import write_shard
    from lenstrt.models import create_model
    from lenstrt.models.preprocess import PREPROCESS_SPEC

    d = tmp_path_factory.mktemp("tiny")
    for seed in (0, 1):
        torch.manual_seed(seed)
        m = create_model("vit_tiny", 3, 32)
        ck.save(d / "run" / f"m{seed}" / "best.pt", {
            "state_dict": m.state_dict(), "arch": "vit_tiny", "arch_kwargs": {}, "bands": ["g", "r", "i"],
            "image_size": 32, "preprocess": dict(PREPROCESS_SPEC), "temperature": 1.0 + seed,
            # m1 as `lenstrt train` writes it (how long and where it trained); m0 as an older checkpoint
            **({"metrics": {"train_steps": 1878, "train_time_s": 1200.2, "images_seen": 120192},
                "host": {"cpu": "AMD EPYC", "cpu_cores": 2, "cpu_capability": "AVX2"}} if seed else {})})
    rng = np.random.default_rng(0)
    n = len(KINDS)
    labels = np.array([k == b"lens" for k in KINDS], dtype=np.int8)
    images = rng.normal(0, 1, (n, 3, 32, 32)).astype(np.float32)
    # lenses and companions share a central blob: the untrained model cannot tell them apart (bar fails)
    images[np.isin(KINDS, [b"lens", b"companion"]), :, 12:20, 12:20] += 3
    theta = np.where(labels == 1, rng.uniform(0.3, 3.8, n), 0).astype(np.float32)
    snr = np.where(labels == 1, rng.uniform(5, 300, n), 0).astype(np.float32)
    write_shard(d / "data" / "s.h5", {"images": images, "labels": labels, "kind": np.array(KINDS, dtype="S9"),
                                      "theta_e": theta, "arc_snr": snr,
                                      "ids": np.array([f"id{i}".encode() for i in range(n)])},
                {"survey": "x", "bands": json.dumps(["g", "r", "i"]), "pixel_scale": 0.2})
    return d


def _cli(*args):
    from lenstrt.cli.main import cli

    return CliRunner().invoke(cli, ["evaluate", *map(str, args)])


BEFORE = {"label": "old", "checkpoints": ["old.pt"], "data": ["elsewhere"],
          "old": {"roc_auc": 0.5, "tpr_at_fpr_1e-2": 0.5, "tpr_at_fpr_1e-3": 0.9, "n": 10, "n_lenses": 5}}


@pytest.fixture(scope="module")
def evaluated(tiny):
    """The one model run of this file (evaluate costs ~10 s of CPU, mostly plots)."""
    (tiny / "before.json").write_text(json.dumps(BEFORE))
    out = tiny / "ev"
    res = _cli("--checkpoint", tiny / "run", "--data", tiny / "data", "--out", out, "--bar", "--compare",
               tiny / "before.json", "-q")
    assert res.exit_code == 0, res.output
    return out, res.output


def test_evaluate_end_to_end(tiny, evaluated):
    from lenstrt import checkpoint as ck
    from lenstrt.data.readers import load_all
    from lenstrt.train.trainer import predict_logits

    out, output = evaluated
    m = json.loads((out / "metrics.json").read_text())
    assert m["label"] == "ensemble" and set(m["members"]) == {"m0", "m1"}
    assert set(m["false_positive_rate_by_kind"]["p>0.5"]) == {"galaxy", "companion", "group", "edgeon"}  # kept
    assert list(m["negatives"]) == ["companion", "edgeon", "galaxy", "group"]
    assert {k: v["n"] for k, v in m["negatives"].items()} == {"companion": 25, "edgeon": 5, "galaxy": 60, "group": 10}
    # recompute the ensemble's scores independently and check the per-kind and strata numbers against them
    d = load_all([str(tiny / "data")], extra=("theta_e", "arc_snr", "kind"))
    probs = np.mean([M.sigmoid(predict_logits(ck.build_model(c), d["images"], "cpu") / c["temperature"])
                     for c in (ck.load(tiny / "run" / f"m{s}" / "best.pt") for s in (0, 1))], axis=0)
    labels, kinds = d["labels"], d["kind"].astype(str)
    t = E.threshold_at_fpr(labels, probs, 1e-2)
    assert np.isfinite(t) and m["thresholds"]["fpr=1e-2"]["threshold"] == pytest.approx(t)
    for k, v in m["negatives"].items():
        sel = kinds == k
        assert v["false_positives"]["fpr=1e-2"] == int((probs[sel] >= t).sum())
        assert v["auroc_vs_lens"] == pytest.approx(M.roc_auc_vs(probs[labels == 1], probs[sel]))
    lens = labels == 1
    for c in m["strata"]["theta_e_x_arc_snr"]:
        (lo, hi), (slo, shi) = c["theta_e_range"], c["arc_snr_range"]
        sel = (lens & (d["theta_e"] >= (-np.inf if lo is None else lo)) & (d["theta_e"] < (np.inf if hi is None else hi))
               & (d["arc_snr"] >= (-np.inf if slo is None else slo)) & (d["arc_snr"] < (np.inf if shi is None else shi)))
        assert c["n"] == sel.sum() and c["fpr=1e-2"]["detected"] == int((probs[sel] >= t).sum())
    assert sum(b["n"] for b in m["strata"]["theta_e"]) == 40
    assert m["quality_bar"] == E.quality_bar(m) and m["quality_bar"]["pass"] is False  # an untrained model
    # one row per cutout with the scores the metrics came from
    import pyarrow.parquet as pq

    rows = pq.read_table(out / "scores.parquet").to_pydict()
    assert m["scores"] == str(out / "scores.parquet") and rows["id"] == list(d["ids"].astype(str))
    assert rows["kind"] == list(kinds) and rows["label"] == list(labels)
    assert np.allclose(rows["score"], probs, atol=1e-6) and np.allclose(rows["theta_e"], d["theta_e"])
    assert np.allclose(np.mean([rows["score_m0"], rows["score_m1"]], axis=0), probs, atol=1e-6)
    # files and output
    assert (out / "completeness_strata.png").read_bytes()[:4] == b"\x89PNG"
    report = (out / "report.md").read_text()
    for s in ("## Headline", "| member m0 |", "## Non-lenses by kind", "| edgeon | 5 |", "## Completeness by Einstein",
              "## Completeness by arc S/N", "## Completeness by θE x arc S/N", "## Quality bar",
              "## Comparison: before old -> after ensemble", "evaluated on different data", "| AUROC | 0.5000 |",
              "completeness_strata.png",
              "training of m0: steps unknown  \n",
              "training of m1: 1,878 steps (120,192 images) in 1,200 s on AMD EPYC, AVX2, 2 cores  \n"):
        assert s in report, s
    assert m["training"]["m1"] == {"steps": 1878, "seconds": 1200.2, "images_seen": 120192,
                                   "host": {"cpu": "AMD EPYC", "cpu_cores": 2, "cpu_capability": "AVX2"}}
    lines = output.splitlines()
    assert lines[0].startswith("ensemble on 140 cutouts (40 lenses): AUROC")
    assert any(ln.startswith("lens vs companion AUROC ") and "(25 companions); vs edgeon" in ln for ln in lines)
    assert sum(ln.strip().startswith(("PASS", "FAIL", "n/a")) for ln in lines) == 3
    assert lines[-1] == f"report: {out}/report.md"


def test_runs_given_together_are_one_ensemble(tiny, evaluated, tmp_path):
    """Two runs' members, trained apart (their member directories share a name), scored as one ensemble:
    the same two models as the run above, so the same scores."""
    import shutil

    import pyarrow.parquet as pq

    (tmp_path / "other" / "m0").mkdir(parents=True)
    shutil.copy(tiny / "run" / "m1" / "best.pt", tmp_path / "other" / "m0" / "best.pt")
    res = _cli("--checkpoint", tiny / "run" / "m0" / "best.pt", "--checkpoint", tmp_path / "other", "--data",
               tiny / "data", "--out", tmp_path / "ev", "-q")
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["label"] == "ensemble" and list(m["members"]) == ["m0", "m0-2"]
    assert m["training"]["m0-2"]["steps"] == 1878  # m1's record, under its new name
    both = pq.read_table(evaluated[0] / "scores.parquet").to_pydict()
    got = pq.read_table(tmp_path / "ev" / "scores.parquet").to_pydict()
    assert np.allclose(got["score"], both["score"], atol=1e-6) and np.allclose(got["score_m0-2"], both["score_m1"])
    assert m["ensemble"]["roc_auc"] == pytest.approx(json.loads((evaluated[0] / "metrics.json").read_text())
                                                     ["ensemble"]["roc_auc"])


def test_tta_scores_do_not_depend_on_orientation(tiny, evaluated, tmp_path):
    """--tta scores a cutout as the mean of its 8 flips/rotations, so the set turned by 90 degrees scores the
    same; one view does not (the untrained models are not symmetric)."""
    import h5py
    import pyarrow.parquet as pq

    from lenstrt.data.shards import write_shard

    with h5py.File(tiny / "data" / "s.h5") as f:
        arrays = {k: f[k][:] for k in ("images", "labels", "kind", "theta_e", "arc_snr", "ids")}
        attrs = dict(f.attrs)
    arrays["images"] = np.ascontiguousarray(np.rot90(arrays["images"], 1, axes=(-2, -1)))
    write_shard(tmp_path / "turned" / "s.h5", arrays, attrs)
    res = _cli("--checkpoint", tiny / "run", "--data", tiny / "data", "--out", tmp_path / "a", "--tta", "-q")
    assert res.exit_code == 0, res.output
    assert "ensemble (8-view TTA) on 140 cutouts" in res.output
    E.evaluate(str(tiny / "run"), [str(tmp_path / "turned")], tmp_path / "b", tta=True)
    a, b = (pq.read_table(tmp_path / d / "scores.parquet").column("score").to_numpy() for d in ("a", "b"))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    one = pq.read_table(evaluated[0] / "scores.parquet").column("score").to_numpy()
    assert np.abs(one - a).max() > 1e-3
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["tta"] is True
    assert "(--tta)" in (tmp_path / "a" / "report.md").read_text()


def test_compare_only_and_strict_bar(tiny, evaluated, tmp_path):
    out, _ = evaluated
    res = _cli("--metrics", out, "--compare", tiny / "before.json", "--out", tmp_path / "c")
    assert res.exit_code == 0, res.output
    md = (tmp_path / "c" / "compare.md").read_text()
    assert md.startswith("# Comparison: before old -> after ensemble") and "| TPR@FPR1e-3 | 0.9000 |" in md
    assert res.output.splitlines()[0].startswith("roc_auc 0.5000 -> ")
    assert res.output.splitlines()[-1] == f"comparison: {tmp_path}/c/compare.md"
    res = _cli("--metrics", out / "metrics.json", "--compare", tiny / "before.json", "--out", tmp_path / "c",
               "--strict-bar")
    assert res.exit_code == 1
    err = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and err[0].startswith("error: quality bar failed: ") and "lens_vs_companion_auroc" in err[0]


@pytest.mark.parametrize("argv,expect", [
    (["--out", "{t}/o"], "give --checkpoint and --data, or --metrics and --compare"),
    (["--checkpoint", "x.pt", "--out", "{t}/o"], "--data is required with --checkpoint"),
    (["--checkpoint", "x.pt", "--data", "d", "--metrics", "m.json", "--out", "{t}/o"], "--metrics is for comparing"),
    (["--metrics", "{t}/nope.json", "--compare", "{t}/nope2", "--out", "{t}/o"], "nope2/metrics.json: no such file"),
])
def test_cli_usage_errors_are_one_line(tmp_path, argv, expect):
    (tmp_path / "nope2").mkdir()
    res = _cli(*(a.format(t=tmp_path) for a in argv))
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code in (1, 2) and len(lines) == 1 and expect in lines[0], res.output
