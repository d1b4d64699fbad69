"""`lenstrt evaluate`: the field's metrics and plots for a checkpoint or a trained ensemble."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lenstrt import checkpoint as ck
from lenstrt.io import write_json
from lenstrt.metrics import (
    completeness_binned,
    expected_calibration_error,
    roc_curve,
    sigmoid,
    summary,
    tpr_at_fpr,
)


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


def evaluate(checkpoint: str | Path, data: list[str], out: str | Path, device: str | None = None,
             batch_size: int = 256, prevalence: float = 1e-3) -> dict[str, Any]:
    from lenstrt.data.readers import load_all
    from lenstrt.plots import binned, gallery, reliability, roc
    from lenstrt.train.hardware import pick_device
    from lenstrt.train.trainer import predict_logits

    dev = pick_device(device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    d = load_all(data, extra=("theta_e", "arc_snr", "kind"))
    labels = d["labels"]
    paths = ck.resolve(checkpoint)
    member_probs: dict[str, np.ndarray] = {}
    for p in paths:
        c = ck.load(p)
        if len(c["bands"]) != d["images"].shape[1] or c["image_size"] != d["images"].shape[-1]:
            from lenstrt.errors import InputError

            raise InputError(f"{data[0]}: cutouts are {d['images'].shape[1]}x{d['images'].shape[-1]}px but {p} "
                             f"expects {len(c['bands'])} bands of {c['image_size']}px")
        model = ck.build_model(c).to(dev)
        logits = predict_logits(model, d["images"], dev, batch_size)
        member_probs[p.parent.name if p.name == "best.pt" else p.stem] = sigmoid(logits / c["temperature"])
    names = list(member_probs)
    probs = np.mean([member_probs[n] for n in names], axis=0)
    label = "ensemble" if len(names) > 1 else names[0]
    result: dict[str, Any] = {"checkpoints": [str(p) for p in paths], "data": [str(x) for x in data],
                              "members": {n: summary(labels, pr) for n, pr in member_probs.items()}}
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
    result["plots"] = plots
    result["label"] = label
    write_json(out / "metrics.json", result)
    return result
