from __future__ import annotations

import click

from lenstrt.cli import options


@click.command("export")
@click.option("--checkpoint", "checkpoints", multiple=True, required=True,
              help="Checkpoint or run directory (repeatable); every member goes into one bundle.")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Bundle directory [engines/<run name>].")
@click.option("--fp16", is_flag=True, help="Also write the mixed-precision fp16 graph (and build engines from it).")
@click.option("--fuse", is_flag=True, help="Also write one graph computing the whole ensemble and its fusion.")
@click.option("--batch", default="1,64,1024", show_default=True, help="MIN,OPT,MAX batch (TensorRT profile).")
@click.option("--triton", "triton_repo", type=click.Path(file_okay=False), default=None,
              help="Also write a Triton model repository here.")
@click.option("--require-trt", is_flag=True, help="Fail unless TensorRT engines can be built here.")
@click.option("--data", multiple=True, help="Labelled cutouts for validation [simulated from the checkpoint's survey].")
@click.option("--n-val", type=click.IntRange(min=8), default=256, show_default=True)
@click.option("--int8", is_flag=True, help="Also write a validated INT8 QDQ graph per member (and fused graph).")
@click.option("--calib-data", multiple=True, help="--int8: cutouts to calibrate on [simulated for the survey].")
@click.option("--calib-n", type=click.IntRange(min=1), default=256, show_default=True,
              help="--int8: calibration cutouts.")
@click.option("--calib-method", type=click.Choice(["minmax", "entropy", "percentile"]), default="percentile",
              show_default=True, help="--int8: activation range calibration (docs/export.md).")
@options.quiet
def command(checkpoints, out, fp16, fuse, batch, triton_repo, require_trt, data, n_val, int8, calib_data, calib_n,
            calib_method, quiet):
    """Checkpoint(s) -> validated ONNX (+ fp16 graph, TensorRT engines, fused graph) in one bundle."""
    from pathlib import Path

    from lenstrt.export.pipeline import export_bundle

    b = options.int_list(batch)
    if b is None or len(b) != 3:
        raise click.BadParameter("expected MIN,OPT,MAX", param_hint="--batch")
    out = out or str(Path("engines") / Path(checkpoints[0]).resolve().name)
    from lenstrt.io import writable_dir

    writable_dir(Path(out).resolve().parent, "--out's parent")  # the bundle is built beside it, then renamed
    manifest = export_bundle(list(checkpoints), out, fp16=fp16, fuse=fuse, batch=tuple(b), triton=triton_repo,
                             require_trt=require_trt, data=list(data) or None, n_val=n_val,
                             log=(lambda *a: None) if quiet else click.echo, int8=int8,
                             calib_data=list(calib_data) or None, calib_n=calib_n, calib_method=calib_method)
    from lenstrt.export.report import agreement_table

    click.echo(agreement_table(manifest))
    click.echo(f"bundle: {out}/manifest.json")
