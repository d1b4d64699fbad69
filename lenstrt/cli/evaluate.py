from __future__ import annotations

import click

from lenstrt.cli import options


@click.command("evaluate")
@click.option("--checkpoint", required=True, help="A checkpoint (.pt) or a run directory (evaluates the ensemble).")
@click.option("--data", multiple=True, required=True, help="Labelled cutouts (files, directories, globs).")
@click.option("--out", type=click.Path(file_okay=False), required=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--prevalence", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=1e-3,
              show_default=True, help="Lens fraction of the survey, for purity and candidates per million.")
@options.quiet
def command(checkpoint, data, out, device, batch_size, prevalence, quiet):  # quiet: accepted like every command; no bars here
    """ROC AUC, TPR at FPR 1e-2/1e-3, TPR0/TPR10, ECE, completeness; metrics.json and plots."""
    from lenstrt.io import writable_dir

    writable_dir(out, "--out")  # before any work: an unusable output is one line

    from lenstrt.train.evaluate import evaluate

    res = evaluate(checkpoint, list(data), out, device=device, batch_size=batch_size, prevalence=prevalence)
    m = res[res["label"]]
    click.echo(f"{res['label']} on {m['n']} cutouts ({m['n_lenses']} lenses): AUROC {m['roc_auc']:.4f}  "
               f"TPR@FPR1e-2 {m['tpr_at_fpr_1e-2']:.3f}  TPR@FPR1e-3 {m['tpr_at_fpr_1e-3']:.3f}  "
               f"TPR0 {m['tpr0']:.3f}  TPR10 {m['tpr10']:.3f}  ECE {m['ece']:.4f}")
    if "false_positive_rate_by_kind" in res:
        click.echo(f"false-positive rate by kind: {res['false_positive_rate_by_kind']}")
    for op in res["survey"]["operating_points"]:
        click.echo(f"at FPR {op['fpr']:.1e} (TPR {op['tpr']:.3f}) a survey with lens prevalence {prevalence:g} gets "
                   f"{op['candidates_per_million']:,.0f} candidates per million cutouts, purity {op['purity']:.2f}")
    click.echo(f"metrics and plots: {out}/metrics.json")
