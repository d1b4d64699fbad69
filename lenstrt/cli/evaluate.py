from __future__ import annotations

import click

from lenstrt.cli import options


def _echo_bar(qb: dict, verbose: bool) -> None:
    if not verbose:  # one line unless asked: the details are in report.md
        failed = f" ({', '.join(qb['failed'])}; --bar for details)" if qb["failed"] else ""
        click.echo(f"quality bar: {'PASS' if qb['pass'] else 'FAIL'}{failed}")
        return
    word = {True: "PASS", False: "FAIL", None: "n/a "}
    for c in qb["checks"]:
        value = "-" if c["value"] is None else f"{c['value']:.4f}"
        click.echo(f"  {word[c['pass']]}  {c['name']}: {value} (>= {c['threshold']:g})"
                   + (f"  {c['detail']}" if c["detail"] else ""))
    click.echo(f"quality bar: {'PASS' if qb['pass'] else 'FAIL'}")


def _strict(qb: dict) -> None:
    if qb["failed"]:
        from lenstrt.errors import LenstrtError

        why = ", ".join(f"{c['name']} {c['value']:.4f} < {c['threshold']:g}" for c in qb["checks"] if c["pass"] is False)
        raise LenstrtError(f"quality bar failed: {why}")


@click.command("evaluate")
@click.option("--checkpoint", multiple=True,
              help="A checkpoint (.pt) or a run directory (evaluates the ensemble); repeat it to score several runs' "
                   "members as one ensemble. Omit it, with --metrics and --compare, to only compare two earlier "
                   "evaluations (writes OUT/compare.md).")
@click.option("--data", multiple=True, help="Labelled cutouts (files, directories, globs); needed with --checkpoint.")
@click.option("--out", type=click.Path(file_okay=False), required=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--prevalence", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=1e-3,
              show_default=True, help="Lens fraction of the survey, for purity and candidates per million.")
@click.option("--compare", "compare_path", type=click.Path(), default=None,
              help="An earlier evaluation's metrics.json (or its directory): adds before/after tables to report.md.")
@click.option("--metrics", "metrics_path", type=click.Path(), default=None,
              help="Without --checkpoint: the 'after' metrics.json to compare with --compare; runs no model.")
@click.option("--tta", is_flag=True, help="Score each cutout as the mean of its 8 flips/rotations (as serve --tta).")
@click.option("--bar", is_flag=True, help="Print each quality-bar check (docs/evaluation.md); exit 0 either way.")
@click.option("--strict-bar", is_flag=True, help="As --bar, and exit 1 if any check fails.")
@options.quiet
def command(checkpoint, data, out, device, batch_size, prevalence, compare_path, metrics_path, tta, bar, strict_bar,
            quiet):  # quiet: accepted like every command; no bars here
    """ROC AUC, TPR at FPR 1e-2/1e-3, TPR0/TPR10, ECE, completeness by theta_E and arc S/N, per-kind
    false positives, the quality bar; metrics.json, report.md and plots."""
    checkpoint = list(checkpoint) or None
    if checkpoint is None and not (metrics_path and compare_path):
        raise click.UsageError("give --checkpoint and --data, or --metrics and --compare to compare two evaluations")
    if checkpoint is not None and metrics_path:
        raise click.UsageError("--metrics is for comparing without --checkpoint; with --checkpoint use --compare only")
    if checkpoint is not None and not data:
        raise click.UsageError("--data is required with --checkpoint")
    from lenstrt.io import writable_dir

    writable_dir(out, "--out")  # before any work: an unusable output is one line

    from lenstrt.train.evaluate import compare_report, load_metrics, quality_bar, write_text

    before = load_metrics(compare_path) if compare_path else None
    if checkpoint is None:
        after = load_metrics(metrics_path)
        path = write_text(f"{out}/compare.md", compare_report(before, after))
        hb, ha = before[before["label"]], after[after["label"]]
        click.echo("  ".join(f"{k} {hb[k]:.4f} -> {ha[k]:.4f}" for k in ("roc_auc", "tpr_at_fpr_1e-2", "tpr_at_fpr_1e-3")
                             if k in hb and k in ha))
        click.echo(f"comparison: {path}")
        if bar or strict_bar:  # the 'after' evaluation's bar (recomputed for a metrics.json that predates it)
            qb = after.get("quality_bar") or quality_bar(after)
            _echo_bar(qb, True)
            if strict_bar:
                _strict(qb)
        return

    from lenstrt.train.evaluate import evaluate

    res = evaluate(checkpoint, list(data), out, device=device, batch_size=batch_size, prevalence=prevalence,
                   before=before, tta=tta)
    m = res[res["label"]]
    click.echo(f"{res['label']}{' (8-view TTA)' if tta else ''} on {m['n']} cutouts ({m['n_lenses']} lenses): AUROC {m['roc_auc']:.4f}  "
               f"TPR@FPR1e-2 {m['tpr_at_fpr_1e-2']:.3f}  TPR@FPR1e-3 {m['tpr_at_fpr_1e-3']:.3f}  "
               f"TPR0 {m['tpr0']:.3f}  TPR10 {m['tpr10']:.3f}  ECE {m['ece']:.4f}")
    if "false_positive_rate_by_kind" in res:
        click.echo(f"false-positive rate by kind: {res['false_positive_rate_by_kind']}")
    neg = res.get("negatives", {})
    if neg.get("companion", {}).get("auroc_vs_lens") is not None:
        others = ", ".join(f"{k} {v['auroc_vs_lens']:.4f}" for k, v in neg.items()
                           if k != "companion" and v["auroc_vs_lens"] is not None)
        click.echo(f"lens vs companion AUROC {neg['companion']['auroc_vs_lens']:.4f} ({neg['companion']['n']} "
                   f"companions)" + (f"; vs {others}" if others else ""))
    qb = res["quality_bar"]
    stratum = next(c for c in qb["checks"] if c["name"] == "stratum_completeness")
    if stratum["value"] is not None:
        click.echo(f"strata at FPR 1e-2, S/N >= {qb['settings']['min_snr']:g}: {stratum['detail']}")
    for op in res["survey"]["operating_points"]:
        click.echo(f"at FPR {op['fpr']:.1e} (TPR {op['tpr']:.3f}) a survey with lens prevalence {prevalence:g} gets "
                   f"{op['candidates_per_million']:,.0f} candidates per million cutouts, purity {op['purity']:.2f}")
    _echo_bar(qb, bar or strict_bar)
    click.echo(f"metrics and plots: {out}/metrics.json")
    click.echo(f"report: {res['report']}")
    if strict_bar:
        _strict(qb)
