from __future__ import annotations

import click

from lenstrt.cli import options
from lenstrt.runtime.registry import serve_names


@click.command("serve")
@click.option("--bundle", "bundle_dir", required=True, type=click.Path(file_okay=False), help="Bundle from `lenstrt export`.")
@click.option("--input", "inputs", multiple=True, required=True, help="Cutout files, directories or globs (repeatable).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--backend", type=click.Choice(serve_names()), default=None, help=options.backend_help())
@click.option("--precision", type=click.Choice(options.precision_names()), default="auto",
              show_default=True, help="auto: the fastest precision the bundle validated for the backend (says why).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None)
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv"]), default="parquet", show_default=True)
@click.option("--fused/--separate", default=False, show_default=True, help="Run the fused ensemble graph, or members.")
@click.option("--mc-samples", type=click.IntRange(min=0), default=None, help="MC-dropout samples (torch backend).")
@click.option("--fusion", type=click.Choice(["mean", "uncertainty_weighted"]), default=None)
@click.option("--tta/--no-tta", default=None,
              help="Score each cutout as the mean of its 8 flips/rotations (8x the compute) [config: inference.tta].")
@click.option("--tta-above", type=click.FloatRange(0, 1), default=None,
              help="Only cutouts whose one-view score reaches this get the 8 views (a cascade: a few per cent "
                   "more compute for a gate below the candidate threshold; docs/serve.md).")
@click.option("--resume/--no-resume", default=True, show_default=True, help="Continue a killed run in --out.")
@click.option("--strict", is_flag=True, help="Stop at the first unreadable shard instead of recording and skipping it.")
@click.option("--unit-rows", type=click.IntRange(min=1), default=8192, show_default=True,
              help="Rows per work unit (one part file and one ledger line each).")
@click.option("--top-k", type=click.IntRange(min=1), default=100, show_default=True, help="Rows in candidates.csv.")
@click.option("--gallery", is_flag=True, help="Also write candidates.png (top candidates as colour composites).")
@click.option("--compile", "compile_", is_flag=True, help="torch backend: torch.compile the members.")
@click.option("--amp/--no-amp", default=None,
              help="torch backend: autocast (default: fp16 on CUDA, fp32 on CPU; --amp adds bf16 on CPUs, "
                   "~2.9x on AMX CPUs, probabilities within ~1e-2).")
@click.option("--cuda-graph", is_flag=True, help="trt backend: capture a CUDA graph for the batch size.")
@click.option("--prevalence", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="Also write score_survey: the score re-weighted from the training lens fraction to this "
                   "prevalence (e.g. 1e-3 for a survey).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="auto", default=None,
              help="Score on a Ray cluster: --ray (a running cluster, else a local one) or --ray ADDRESS.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="--ray: actor-pool size [one per GPU].")
@click.option("--gpus-per-worker", type=click.FloatRange(min=0), default=None, help="--ray: GPUs per actor [1 if any].")
@click.option("--rescore-changed", is_flag=True,
              help="Resume: score again the input files that changed since this output was written (default: refuse).")
@click.option("--readers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Reader processes (1: one reader thread). More when reading, not the model, is the limit "
                   "(GPUs; docs/serve.md).")
@click.option("--concurrency", type=click.Choice(["auto", "sequential", "threads", "streams"]), default="auto",
              show_default=True)
@click.option("--keep-columns", default=None,
              help="Input columns carried into the catalog and candidates (comma-separated; HDF5 datasets of length "
                   "N, object-table columns) [ra,dec where present].")
@click.option("--candidates-format", type=click.Choice(["csv", "fits", "votable"]), default="csv", show_default=True,
              help="candidates.csv, candidates.fits or candidates.vot (TOPCAT and astropy open all three).")
@click.option("--pixel-scale-tolerance", type=click.FloatRange(min=0), default=0.03, show_default=True,
              help="Refuse inputs whose WCS pixel scale differs from the bundle's training scale by more (relative).")
@click.option("--ignore-pixel-scale", is_flag=True, help="Score inputs at any pixel scale (no check).")
@options.config
@options.quiet
def command(bundle_dir, inputs, out, backend, precision, batch_size, fmt, fused, mc_samples, fusion, tta, tta_above,
            resume, strict, unit_rows,
            top_k, gallery, compile_, amp, cuda_graph, prevalence, ray_address, workers, gpus_per_worker, rescore_changed,
            readers, concurrency,
            keep_columns, candidates_format, pixel_scale_tolerance, ignore_pixel_scale, config_path, quiet):
    """Score a cutout catalog with a bundle's ensemble: resumable, exactly once, candidates at the end."""
    from lenstrt.config import load_config
    from lenstrt.serve.pipeline import ServeOptions, serve

    cfg = load_config(config_path)
    opts = ServeOptions(
        backend=backend or cfg.inference.backend, batch_size=batch_size or cfg.inference.batch_size, fmt=fmt,
        fused=fused, mc_samples=cfg.inference.mc_samples if mc_samples is None else mc_samples,
        fusion=fusion or cfg.ensemble.fusion_method, resume=resume, strict=strict, unit_rows=unit_rows,
        top_k=top_k, gallery=gallery, compile=compile_, cuda_graph=cuda_graph, concurrency=concurrency,
        prevalence=prevalence, amp=amp, candidates_format=candidates_format, readers=readers,
        rescore_changed=rescore_changed, precision=precision,
        tta=cfg.inference.tta if tta is None else tta, tta_above=tta_above,
        keep_columns=None if keep_columns is None else tuple(c.strip() for c in keep_columns.split(",") if c.strip()),
        pixel_scale_tolerance=None if ignore_pixel_scale else pixel_scale_tolerance)
    if ray_address:
        from lenstrt.serve.ray import serve_ray

        s = serve_ray(bundle_dir, list(inputs), out, opts, address=ray_address, workers=workers,
                      gpus_per_worker=gpus_per_worker, progress=not quiet, log=click.echo)
    else:
        s = serve(bundle_dir, list(inputs), out, opts, progress=not quiet, log=click.echo)
    c, tp = s["counts"], s["throughput"]
    click.echo(f"scored {c['rows_this_run']:,} cutouts this run ({c['catalog_rows']:,} of {c['input_rows']:,} in the "
               f"catalog); {tp['end_to_end_img_s']} img/s end to end, {tp['inference_img_s']} img/s inference"
               + (f"; {c['errors_recorded']} error(s) in {out}/errors.jsonl" if c["errors_recorded"] else ""))
    click.echo(f"catalog: {s['catalog']}  candidates: {s['candidates']}  summary: {out}/summary.json")
