"""`lenstrt evaluate`: the field's metrics and plots for a checkpoint or a trained ensemble."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lenstrt import checkpoint as ck
from lenstrt.io import atomic_path, write_json
from lenstrt.metrics import (
    bin_index,
    bin_labels,
    completeness_binned,
    expected_calibration_error,
    roc_auc_vs,
    roc_curve,
    sigmoid,
    summary,
    tpr_at_fpr,
    wilson_interval,
)

THETA_E_EDGES = (0.5, 1.0, 1.5, 2.0, 2.5, 3.5)  # arcsec; plus "<0.5" and ">=3.5" bins
ARC_SNR_EDGES = (10.0, 20.0, 50.0, 100.0, 200.0)  # plus "<10" and ">=200" bins
STRATA_FPRS = {"fpr=1e-2": 1e-2, "fpr=1e-3": 1e-3}
BAR_OP = "fpr=1e-2"  # the operating point the stratum check and the 2-D table use


def threshold_at_fpr(labels: np.ndarray, probs: np.ndarray, max_fpr: float) -> float:
    fpr, _, thr = roc_curve(labels, probs)
    ok = np.flatnonzero(fpr <= max_fpr + 1e-12)
    return float(thr[ok[-1]]) if len(ok) else float("inf")


def operating_points(labels: np.ndarray, probs: np.ndarray, prevalence: float,
                     fprs: tuple[float, ...] = (1e-2, 1e-3, 1e-4)) -> list[dict[str, float]]:
    """What a survey would see at each threshold: with lenses at `prevalence`, the purity of the
    candidate list and the candidates per million cutouts (contamination ~ FPR / (TPR x prevalence))."""
    out = []
    neg = max(int((labels == 0).sum()), 1)
    for target in fprs:
        if target * neg < 1:
            continue  # the test set is too small to measure this FPR
        t = threshold_at_fpr(labels, probs, target)
        tpr = float((probs[labels == 1] >= t).mean()) if (labels == 1).any() else 0.0
        fpr = float((probs[labels == 0] >= t).mean())
        flagged = tpr * prevalence + fpr * (1 - prevalence)
        out.append({"target_fpr": target, "threshold": t, "tpr": tpr, "fpr": fpr,
                    "purity": tpr * prevalence / flagged if flagged else float("nan"),
                    "candidates_per_million": 1e6 * flagged})
    return out


def _num(x: float | None) -> float | None:
    """JSON-safe: inf/NaN (an unreachable threshold, an empty group) as null."""
    return None if x is None or not np.isfinite(x) else float(x)


def operating_thresholds(labels: np.ndarray, probs: np.ndarray,
                         fprs: dict[str, float] = STRATA_FPRS) -> dict[str, dict[str, Any]]:
    """The score thresholds the strata and per-kind numbers are taken at, from all non-lenses pooled.
    A row counts as detected when its score is >= the threshold (as in roc_curve, so the completeness of
    all lenses equals summary()'s TPR@FPR). `resolved` is False when the set has fewer than 1/FPR
    non-lenses: the threshold is then the zero-false-positive one, stricter than the target."""
    neg = labels == 0
    out = {}
    for name, target in fprs.items():
        t = threshold_at_fpr(labels, probs, target)
        out[name] = {"target_fpr": target, "threshold": _num(t),
                     "fpr": float((probs[neg] >= t).mean()) if neg.any() else None,
                     "tpr": float((probs[~neg] >= t).mean()) if (~neg).any() else None,
                     "resolved": bool(target * neg.sum() >= 1)}
    return out


def _cell(detected: dict[str, np.ndarray], sel: np.ndarray) -> dict[str, Any]:
    n = int(sel.sum())
    cell: dict[str, Any] = {"n": n}
    for name, det in detected.items():
        k = int(det[sel].sum())
        cell[name] = {"detected": k, "completeness": k / n if n else None,
                      "ci68": list(wilson_interval(k, n)) if n else None}
    return cell


def _ranges(edges) -> list[list[float | None]]:
    e = [None, *map(float, edges), None]
    return [[a, b] for a, b in zip(e[:-1], e[1:])]


def strata(theta_e: np.ndarray | None, arc_snr: np.ndarray | None, lens_probs: np.ndarray,
           thresholds: dict[str, float]) -> dict[str, Any]:
    """Completeness of lenses (rows of lenses only) per theta_E bin, arc S/N bin and theta_E x S/N cell,
    at each threshold ({name: score threshold}); n, detected, completeness and a 68% Wilson interval per
    bin. Bins are half-open [lo, hi) with explicit under/over bins (range null on the open side) rather
    than clipping into the edge bins, so an edge bin never mixes in lenses from outside its range."""
    detected = {name: lens_probs >= (np.inf if t is None else t) for name, t in thresholds.items()}
    out: dict[str, Any] = {"interval": "Wilson score, 68.3% (z = 1)", "bins": "[lo, hi); null = open"}
    axes = {}
    for key, values, edges, fmt in (("theta_e", theta_e, THETA_E_EDGES, "{:.1f}"),
                                    ("arc_snr", arc_snr, ARC_SNR_EDGES, "{:g}")):
        if values is None:
            continue
        idx, labels, ranges = bin_index(values, edges), bin_labels(edges, fmt), _ranges(edges)
        axes[key] = (idx, labels, ranges)
        out[f"{key}_edges"] = list(edges)
        out[key] = [{"bin": labels[i], "range": ranges[i], **_cell(detected, idx == i)} for i in range(len(labels))]
    if len(axes) == 2:
        (it, lt, rt), (ia, la, ra) = axes["theta_e"], axes["arc_snr"]
        out["theta_e_x_arc_snr"] = [
            {"theta_e": lt[i], "arc_snr": la[j], "theta_e_range": rt[i], "arc_snr_range": ra[j],
             **_cell(detected, (it == i) & (ia == j))}
            for i in range(len(lt)) for j in range(len(la))]
    return out


def negatives(labels: np.ndarray, probs: np.ndarray, kinds: np.ndarray,
              thresholds: dict[str, float]) -> dict[str, dict[str, Any]]:
    """Per non-lens kind (whatever kinds the data has, among label-0 rows): n, false positives and their
    rate at each threshold, and the AUROC of all lenses against that kind alone."""
    lens_p = probs[labels == 1]
    out = {}
    for kind in sorted(set(kinds[labels == 0].tolist())):
        p = probs[(labels == 0) & (kinds == kind)]
        fp = {name: int((p >= (np.inf if t is None else t)).sum()) for name, t in thresholds.items()}
        out[kind] = {"n": int(len(p)), "false_positives": fp,
                     "false_positive_rate": {name: k / len(p) for name, k in fp.items()},
                     "auroc_vs_lens": _num(roc_auc_vs(lens_p, p))}
    return out


def _check(name: str, value: float | None, threshold: float, detail: str = "", **extra: Any) -> dict[str, Any]:
    return {"name": name, "value": value, "threshold": threshold,
            "pass": None if value is None else bool(value >= threshold), "detail": detail, **extra}


def quality_bar(result: dict[str, Any], min_stratum_completeness: float = 0.6, min_snr: float = 20,
                min_stratum_n: int = 20, min_lens_vs_companion: float = 0.97,
                min_tpr_at_1e3: float = 0.85) -> dict[str, Any]:
    """The bar a lens-finding team holds a classifier to, from a metrics.json dict. Checks:
    - stratum_completeness: every theta_E x arc S/N cell whose S/N lower edge is >= min_snr, and every
      theta_E bin pooled over those S/N bins, that has >= min_stratum_n lenses must have completeness at
      FPR 1e-2 >= min_stratum_completeness (value: the worst such stratum). Low-S/N strata are left out:
      arcs there are not expected to be found; small ones: their completeness is mostly noise.
    - lens_vs_companion_auroc: AUROC of lenses vs companions alone (the hardest common negative).
    - tpr_at_fpr_1e-3 of the evaluated model (ensemble when there is one).
    A check that cannot be made (no companions, no stratum large enough) has pass null ("n/a") and does
    not fail the bar; `pass` is True when no check failed."""
    checks = []
    grid = result.get("strata", {}).get("theta_e_x_arc_snr")
    if grid is None:
        checks.append(_check("stratum_completeness", None, min_stratum_completeness, "no theta_e/arc_snr in the data"))
    else:
        above = [c for c in grid if c["arc_snr_range"][0] is not None and c["arc_snr_range"][0] >= min_snr]
        cands = [(f"theta_E {c['theta_e']} x S/N {c['arc_snr']}", c["n"], c[BAR_OP]["detected"]) for c in above]
        for row in dict.fromkeys(c["theta_e"] for c in above):
            cs = [c for c in above if c["theta_e"] == row]
            cands.append((f"theta_E {row}, S/N >= {min_snr:g}", sum(c["n"] for c in cs),
                          sum(c[BAR_OP]["detected"] for c in cs)))
        judged = sorted(((k / n, name, n, k) for name, n, k in cands if n >= min_stratum_n), key=lambda x: x[0])
        if not judged:
            checks.append(_check("stratum_completeness", None, min_stratum_completeness,
                                 f"no stratum with S/N >= {min_snr:g} has >= {min_stratum_n} lenses"))
        else:
            comp, name, n, k = judged[0]
            lo, hi = wilson_interval(k, n)
            below = sum(c < min_stratum_completeness for c, *_ in judged)
            checks.append(_check("stratum_completeness", comp, min_stratum_completeness,
                                 f"worst {name}: {comp:.3f} [{lo:.3f}, {hi:.3f}] (n={n}); "
                                 f"{below} of {len(judged)} strata below {min_stratum_completeness:g}",
                                 worst={"stratum": name, "n": n, "detected": k, "ci68": [lo, hi]}))
    comp_auc = result.get("negatives", {}).get("companion", {}).get("auroc_vs_lens")
    checks.append(_check("lens_vs_companion_auroc", comp_auc, min_lens_vs_companion,
                         "" if comp_auc is not None else "no companions (or no lenses) in the data"))
    head = result.get(result.get("label", ""), {})
    tpr = head.get("tpr_at_fpr_1e-3")
    unresolved = result.get("thresholds", {}).get("fpr=1e-3", {}).get("resolved") is False
    checks.append(_check("tpr_at_fpr_1e-3", tpr, min_tpr_at_1e3,
                         "fewer than 1000 non-lenses: measured at zero false positives" if unresolved else ""))
    failed = [c["name"] for c in checks if c["pass"] is False]
    return {"pass": not failed, "failed": failed, "checks": checks,
            "settings": {"min_stratum_completeness": min_stratum_completeness, "min_snr": min_snr,
                         "min_stratum_n": min_stratum_n, "min_lens_vs_companion": min_lens_vs_companion,
                         "min_tpr_at_1e3": min_tpr_at_1e3}}


# -- report.md ------------------------------------------------------------------------------------------

_HEADLINE = (("roc_auc", "AUROC"), ("tpr_at_fpr_1e-2", "TPR@FPR1e-2"), ("tpr_at_fpr_1e-3", "TPR@FPR1e-3"),
             ("tpr0", "TPR0"), ("tpr10", "TPR10"), ("ece", "ECE"), ("n", "n"), ("n_lenses", "n lenses"))


def _f(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "—"
    return str(x) if isinstance(x, (int, np.integer)) else f"{x:.{digits}f}"


def _delta(a: Any, b: Any, digits: int = 4) -> str:
    if a is None or b is None:
        return "—"
    return f"{b - a:+d}" if isinstance(a, int) and isinstance(b, int) else f"{b - a:+.{digits}f}"


def _op(op: str) -> str:
    return op.replace("fpr=", "FPR ")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def _shown(bins: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Bins for the report: the open-ended under/over bins only when they hold lenses."""
    return [b for b in bins if b["n"] or None not in b["range"]]


def _comp(b: dict[str, Any], op: str, ci: bool = True) -> str:
    c = b[op]
    if not b["n"]:
        return "—"
    return f"{c['completeness']:.3f} [{c['ci68'][0]:.3f}, {c['ci68'][1]:.3f}]" if ci else f"{c['completeness']:.3f}"


def strata_grid(st: dict[str, Any], op: str = BAR_OP):
    """(theta_E labels, S/N labels, completeness [rows, cols] with NaN where empty, counts) of the 2-D
    strata, without empty under/over bins: what report.md's table and the heatmap show."""
    rows = [b["bin"] for b in _shown(st["theta_e"])]
    cols = [b["bin"] for b in _shown(st["arc_snr"])]
    comp = np.full((len(rows), len(cols)), np.nan)
    n = np.zeros((len(rows), len(cols)), dtype=int)
    for c in st["theta_e_x_arc_snr"]:
        if c["theta_e"] in rows and c["arc_snr"] in cols:
            i, j = rows.index(c["theta_e"]), cols.index(c["arc_snr"])
            n[i, j] = c["n"]
            comp[i, j] = np.nan if c[op]["completeness"] is None else c[op]["completeness"]
    return rows, cols, comp, n


def _bar_lines(qb: dict[str, Any]) -> list[str]:
    word = {True: "PASS", False: "FAIL", None: "n/a"}
    rows = [[c["name"], _f(c["value"]), f">= {c['threshold']:g}", word[c["pass"]], c["detail"]] for c in qb["checks"]]
    return [f"**{'PASS' if qb['pass'] else 'FAIL'}**", "", *_table(["check", "value", "threshold", "result", "detail"],
                                                                   rows)]


def training_record(c: dict[str, Any]) -> dict[str, Any]:
    """How much training a checkpoint had, and where: a time budget buys a machine-dependent number of
    steps, so two reports compare only alongside these."""
    m = c.get("metrics") or {}
    return {"steps": m.get("train_steps", c.get("step")), "seconds": m.get("train_time_s"),
            "images_seen": m.get("images_seen"), "host": c.get("host")}


def _training_line(name: str, t: dict[str, Any]) -> str:
    parts = [f"{t['steps']:,} steps" if t.get("steps") is not None else "steps unknown"]
    if t.get("images_seen"):
        parts[0] += f" ({t['images_seen']:,} images)"
    if t.get("seconds") is not None:
        parts.append(f"in {t['seconds']:,.0f} s")
    h = t.get("host")
    if h:
        where = h.get("gpu") or f"{h['cpu']}, {h['cpu_capability']}, {h['cpu_cores']} cores"
        parts.append(f"on {where}")
    return f"training of {name}: {' '.join(parts)}  "


def render_report(result: dict[str, Any], before: dict[str, Any] | None = None) -> str:
    """report.md: the metrics.json of one evaluation for people, optionally compared with an earlier one."""
    label = result["label"]
    lines = [f"# Evaluation of {label}", "", f"checkpoints: {', '.join(result['checkpoints'])}  ",
             f"data: {', '.join(result['data'])}  ",
             *(["scores: the mean of each cutout's 8 flips/rotations (--tta)  "] if result.get("tta") else []),
             *(_training_line(n, t) for n, t in result.get("training", {}).items()), "", "## Headline", ""]
    who = [label, *(result["members"] if len(result["members"]) > 1 else [])]
    lines += _table(["model", *(h for _, h in _HEADLINE)],
                    [[w if w == label else f"member {w}",
                      *(_f((result[label] if w == label else result["members"][w])[k]) for k, _ in _HEADLINE)]
                     for w in who])
    thr = result.get("thresholds", {})
    if thr:
        lines += ["", "Thresholds (set on all non-lenses pooled; detected = p >= threshold): " + "; ".join(
            (f"{_op(op)}: p >= {_f(t['threshold'])} (measured FPR {_f(t['fpr'])})" if t["threshold"] is not None
             else f"{_op(op)}: none (the top score is a non-lens's)")
            + ("" if t["resolved"] else f", fewer than {1 / t['target_fpr']:.0f} non-lenses: zero-false-positive "
                                        "threshold") for op, t in thr.items())]
    if result.get("negatives"):
        lines += ["", "## Non-lenses by kind", ""]
        lines += _table(["kind", "n", *(f"FPR at {_op(op)} thr" for op in STRATA_FPRS), "AUROC lens vs kind"],
                        [[k, str(v["n"]), *(_f(v["false_positive_rate"][op]) for op in STRATA_FPRS),
                          _f(v["auroc_vs_lens"])] for k, v in result["negatives"].items()])
    st = result.get("strata", {})
    for key, title in (("theta_e", "Einstein radius θE [arcsec]"), ("arc_snr", "arc S/N")):
        if key in st:
            lines += ["", f"## Completeness by {title}", "", "68% Wilson intervals in brackets.", ""]
            lines += _table([key, "n lenses", *(f"completeness at {_op(op)}" for op in STRATA_FPRS)],
                            [[b["bin"], str(b["n"]), *(_comp(b, op) for op in STRATA_FPRS)] for b in _shown(st[key])])
    if "theta_e_x_arc_snr" in st:
        rows, cols, comp, n = strata_grid(st)
        lines += ["", f"## Completeness by θE x arc S/N at {_op(BAR_OP)}", "",
                  "Rows θE [arcsec], columns arc S/N; n lenses in parentheses.", ""]
        lines += _table(["θE \\ S/N", *cols], [[r, *(f"{comp[i, j]:.2f} ({n[i, j]})" if n[i, j] else "—"
                                                     for j in range(len(cols)))] for i, r in enumerate(rows)])
    if "quality_bar" in result:
        lines += ["", "## Quality bar", "", *_bar_lines(result["quality_bar"])]
    if before is not None:
        lines += ["", compare_report(before, result, level=2)]
    if result.get("plots"):
        lines += ["", "## Plots", "", *(f"- `{Path(p).name}`" for p in result["plots"].values())]
    return "\n".join(lines) + "\n"


def compare_report(before_metrics: dict[str, Any], after_metrics: dict[str, Any], level: int = 1) -> str:
    """Markdown before/after tables (columns before, after, change) of the headline metrics, the per-kind
    numbers, the 1-D strata (completeness at FPR 1e-2) and the quality bar of two metrics.json dicts.
    What only one side has shows as "—" (a metrics.json from before the strata existed compares too)."""
    b, a = before_metrics, after_metrics
    h = "#" * level
    lines = [f"{h} Comparison: before {b.get('label')} -> after {a.get('label')}", "",
             f"before: {', '.join(b.get('checkpoints', []))}  ", f"after: {', '.join(a.get('checkpoints', []))}"]
    if sorted(b.get("data", [])) != sorted(a.get("data", [])):
        lines += ["", f"Note: evaluated on different data (before: {', '.join(b.get('data', []))}; "
                      f"after: {', '.join(a.get('data', []))})."]
    hb, ha = b.get(b.get("label", ""), {}), a.get(a.get("label", ""), {})
    lines += ["", f"{h}# Headline", ""]
    lines += _table(["metric", "before", "after", "change"],
                    [[name, _f(hb.get(k)), _f(ha.get(k)), _delta(hb.get(k), ha.get(k))] for k, name in _HEADLINE])
    nb, na = b.get("negatives", {}), a.get("negatives", {})
    if nb or na:
        rows = []
        for kind in sorted(set(nb) | set(na)):
            x, y = nb.get(kind, {}), na.get(kind, {})
            for name, get in (("n", lambda v: v.get("n")),
                              *((f"FPR at {_op(op)} thr",
                                 lambda v, op=op: v.get("false_positive_rate", {}).get(op)) for op in STRATA_FPRS),
                              ("AUROC lens vs kind", lambda v: v.get("auroc_vs_lens"))):
                rows.append([kind, name, _f(get(x)), _f(get(y)), _delta(get(x), get(y))])
        lines += ["", f"{h}# Non-lenses by kind", "", *_table(["kind", "metric", "before", "after", "change"], rows)]
    sb, sa = b.get("strata", {}), a.get("strata", {})
    for key, title in (("theta_e", "θE [arcsec]"), ("arc_snr", "arc S/N")):
        bins_b = {x["bin"]: x for x in _shown(sb.get(key, []))}
        bins_a = {x["bin"]: x for x in _shown(sa.get(key, []))}
        if not bins_b and not bins_a:
            continue
        order = list(dict.fromkeys([*bins_a, *bins_b]))
        rows = []
        for name in order:
            cb = bins_b[name][BAR_OP]["completeness"] if name in bins_b else None
            ca = bins_a[name][BAR_OP]["completeness"] if name in bins_a else None
            rows.append([name, _f(cb, 3) + (f" (n={bins_b[name]['n']})" if name in bins_b else ""),
                         _f(ca, 3) + (f" (n={bins_a[name]['n']})" if name in bins_a else ""), _delta(cb, ca, 3)])
        lines += ["", f"{h}# Completeness by {title} at {_op(BAR_OP)}", "",
                  *_table([key, "before", "after", "change"], rows)]
    qb, qa = b.get("quality_bar"), a.get("quality_bar")
    if qb or qa:
        cb = {c["name"]: c for c in (qb or {}).get("checks", [])}
        ca = {c["name"]: c for c in (qa or {}).get("checks", [])}
        word = {True: "PASS", False: "FAIL", None: "n/a"}
        rows = [[name, *(f"{_f(c[name]['value'])} {word[c[name]['pass']]}" if name in c else "—" for c in (cb, ca)),
                 _delta(cb.get(name, {}).get("value"), ca.get(name, {}).get("value"))]
                for name in dict.fromkeys([*cb, *ca])]
        lines += ["", f"{h}# Quality bar", "", *_table(["check", "before", "after", "change"], rows)]
    return "\n".join(lines) + "\n"


def load_metrics(path: str | Path) -> dict[str, Any]:
    """A metrics.json written by evaluate, or the directory holding one."""
    import json

    from lenstrt.errors import InputError

    p = Path(path)
    if p.is_dir():
        p = p / "metrics.json"
    try:
        m = json.loads(p.read_text())
    except FileNotFoundError as exc:
        raise InputError(f"{p}: no such file; pass the metrics.json (or directory) of a `lenstrt evaluate` run") \
            from exc
    except (OSError, ValueError) as exc:
        raise InputError(f"{p}: not a readable metrics.json ({type(exc).__name__}); re-run `lenstrt evaluate`") \
            from exc
    if not isinstance(m, dict) or "label" not in m:
        raise InputError(f"{p}: not a metrics.json from `lenstrt evaluate` (no 'label')")
    return m


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def _write_scores(path: Path, d: dict[str, np.ndarray], probs: np.ndarray, member_probs: dict[str, np.ndarray]) -> Path:
    """One row per cutout (id, label, what the set records about it, the scores): for diagnoses that need
    more than the report, without scoring the set again."""
    from lenstrt.serve.writers import write_part

    # numpy text columns go to Arrow strings as they are (bytes from HDF5 decoded once by astype)
    cols: dict[str, np.ndarray | list] = {"id": d["ids"].astype(str), "label": d["labels"].astype(np.int8)}
    if "kind" in d:
        cols["kind"] = d["kind"].astype(str)
    cols.update({k: d[k].astype(np.float32) for k in ("theta_e", "arc_snr") if k in d})
    cols["score"] = probs.astype(np.float32)
    if len(member_probs) > 1:
        cols.update({f"score_{n}": p.astype(np.float32) for n, p in member_probs.items()})
    write_part(path, cols, "parquet")
    return path


def evaluate(checkpoint: str | Path | list[str | Path], data: list[str], out: str | Path, device: str | None = None,
             batch_size: int = 256, prevalence: float = 1e-3, before: dict[str, Any] | None = None,
             tta: bool = False) -> dict[str, Any]:
    """Writes metrics.json, report.md (compared with `before`, an earlier metrics.json dict, if given)
    and the plots to `out`; returns the metrics. `checkpoint`: one checkpoint or run directory, or several,
    whose members are scored as one ensemble (the mean of calibrated probabilities, as `serve` fuses them).
    `tta`: each member's probability is the mean over the 8 dihedral views (as `serve --tta`)."""
    from lenstrt.data.readers import load_all
    from lenstrt.plots import binned, gallery, reliability, roc, strata_heatmap
    from lenstrt.runtime.tta import views_mean
    from lenstrt.train.hardware import pick_device
    from lenstrt.train.trainer import predict_logits

    dev = pick_device(device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    d = load_all(data, extra=("theta_e", "arc_snr", "kind"))
    labels = d["labels"]
    paths = [p for c in (checkpoint if isinstance(checkpoint, list) else [checkpoint]) for p in ck.resolve(c)]
    member_probs: dict[str, np.ndarray] = {}
    training: dict[str, dict[str, Any]] = {}
    for p, name in zip(paths, ck.member_names(paths)):
        c = ck.load(p)
        if len(c["bands"]) != d["images"].shape[1] or c["image_size"] != d["images"].shape[-1]:
            from lenstrt.errors import InputError

            raise InputError(f"{data[0]}: cutouts are {d['images'].shape[1]}x{d['images'].shape[-1]}px but {p} "
                             f"expects {len(c['bands'])} bands of {c['image_size']}px")
        model = ck.build_model(c).to(dev)
        def probs_of(x, model=model, t=c["temperature"]):
            return sigmoid(predict_logits(model, x, dev, batch_size) / t)

        member_probs[name] = views_mean(probs_of, d["images"]) if tta else probs_of(d["images"])
        training[name] = training_record(c)
    names = list(member_probs)
    probs = np.mean([member_probs[n] for n in names], axis=0)
    label = "ensemble" if len(names) > 1 else names[0]
    result: dict[str, Any] = {"checkpoints": [str(p) for p in paths], "data": [str(x) for x in data],
                              "members": {n: summary(labels, pr) for n, pr in member_probs.items()},
                              "training": training, "tta": tta}
    result[label] = summary(labels, probs)
    # per-kind false-positive rates at two operating points
    thr = {"p>0.5": 0.5, "fpr=1e-2": threshold_at_fpr(labels, probs, 1e-2)}
    if "kind" in d:
        kinds = np.array([str(k) for k in d["kind"].astype(str)])
        result["false_positive_rate_by_kind"] = {
            name: {str(k): float((probs[kinds == k] > t).mean()) for k in sorted(set(kinds)) if k != "lens"}
            for name, t in thr.items()
        }
    curves = {n: roc_curve(labels, pr)[:2] for n, pr in member_probs.items()}
    if len(names) > 1:
        curves["ensemble"] = roc_curve(labels, probs)[:2]
    plots = {"roc": str(roc(curves, out / "roc.png"))}
    ece, conf, acc, cnt = expected_calibration_error(labels, probs)
    plots["reliability"] = str(reliability(conf, acc, cnt, ece, out / "reliability.png"))
    lens = labels == 1
    for key, edges, xl in (("theta_e", np.linspace(0.6, 2.4, 10), "Einstein radius θE [arcsec]"),
                           ("arc_snr", np.geomspace(10, 3000, 10), "arc S/N")):
        if key in d and lens.any():
            comp = {}
            for name, t in thr.items():
                centers, c_, _ = completeness_binned(d[key][lens], probs[lens] > t, edges)
                comp[name] = c_
            result[f"completeness_vs_{key}"] = {"bin_centers": centers.tolist(),
                                                **{k: [None if np.isnan(v) else float(v) for v in c]
                                                   for k, c in comp.items()}}
            plots[f"completeness_{key}"] = str(binned(centers, comp, xl, "completeness", out / f"completeness_{key}.png",
                                                      title=label))
    order = np.argsort(-probs)
    fp = [i for i in order if not lens[i]][:16]
    fn = [i for i in order[::-1] if lens[i]][:16]
    if fp:
        plots["top_non_lenses"] = str(gallery(d["images"][fp], [f"p={probs[i]:.3f} {d['kind'][i].decode() if 'kind' in d else ''}"
                                                                for i in fp], out / "top_non_lenses.png",
                                              suptitle="highest-scored non-lenses"))
    if fn:
        plots["lowest_lenses"] = str(gallery(d["images"][fn], [f"p={probs[i]:.3f} θE={d['theta_e'][i]:.1f}"
                                                               if "theta_e" in d else f"p={probs[i]:.3f}" for i in fn],
                                             out / "lowest_lenses.png", suptitle="lowest-scored lenses"))
    result["tpr_at_fpr_1e-4"] = tpr_at_fpr(labels, probs, 1e-4)
    result["survey"] = {"prevalence": prevalence, "operating_points": operating_points(labels, probs, prevalence)}
    # strata, per-kind numbers and the bar, at thresholds fixed on all non-lenses (issue #15)
    result["thresholds"] = operating_thresholds(labels, probs)
    cut = {name: threshold_at_fpr(labels, probs, f) for name, f in STRATA_FPRS.items()}
    if "kind" in d:
        result["negatives"] = negatives(labels, probs, kinds, cut)
    if lens.any() and ("theta_e" in d or "arc_snr" in d):
        result["strata"] = strata(d["theta_e"][lens] if "theta_e" in d else None,
                                  d["arc_snr"][lens] if "arc_snr" in d else None, probs[lens], cut)
    if "theta_e_x_arc_snr" in result.get("strata", {}):
        rows, cols, comp, n = strata_grid(result["strata"])
        plots["completeness_strata"] = str(strata_heatmap(comp, n, rows, cols, out / "completeness_strata.png",
                                                          title=f"{label}: completeness at FPR 1e-2"))
    result["plots"] = plots
    result["label"] = label
    result["quality_bar"] = quality_bar(result)
    result["report"] = str(out / "report.md")
    result["scores"] = str(_write_scores(out / "scores.parquet", d, probs, member_probs))
    write_json(out / "metrics.json", result)
    write_text(out / "report.md", render_report(result, before))
    return result
