from __future__ import annotations

import click

from lenstrt.cli import options

FULL_SUITE = {"backends": None, "batch_sizes": "1,16,64,256",  # backends: every one in the registry
              "ensemble": "members,separate,concurrent,fused", "duration_s": 5.0}


@click.command("bench")
@click.option("--bundle", "bundle_dir", required=True, type=click.Path(file_okay=False))
@click.option("--backends", default="torch,ort", show_default=True,
              help="Comma-separated: " + options.backend_help(bench=True))
@click.option("--precision", "precisions", default="auto", show_default=True,
              help="auto,fp32,bf16,fp16,int8 (comma-separated): each backend runs each precision it supports; "
                   "auto = the fastest the bundle validated for it.")
@click.option("--batch-sizes", default="1,64", show_default=True)
@click.option("--ensemble", default="members,separate,concurrent,fused", show_default=True,
              help="members (each alone), separate (one after another), concurrent (threads/streams), fused")
@click.option("--warmup-ms", type=float, default=200.0, show_default=True)
@click.option("--duration-s", type=click.FloatRange(min=0, min_open=True), default=3.0, show_default=True,
              help="Timed seconds per configuration when its first 3 windows (of duration/3 each) agree; more "
                   "windows, up to --max-windows, while they do not.")
@click.option("--stable-pct", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True,
              help="Windows agree when (max - min) / median of the last 3 is within this.")
@click.option("--max-windows", type=click.IntRange(min=3), default=12, show_default=True,
              help="Cap on timing windows per configuration; the spread is reported when it is reached.")
@click.option("--data", multiple=True, help="Labelled cutouts for agreement [simulated].")
@click.option("--n-agree", type=click.IntRange(min=8), default=256, show_default=True,
              help="Cutouts scored for agreement (top-100 overlap means something from ~1,000).")
@click.option("--price-per-hour", type=float, default=None, help="USD per hour, for $ per million cutouts.")
@click.option("--instance", default=None, help="Known instance name (lenstrt/cloud/prices.csv) for the price.")
@click.option("--compare-amp", is_flag=True, help="Add torch-amp next to every torch configuration.")
@click.option("--full-suite", is_flag=True, help="Every backend available here, batch 1-256, all ensemble modes, 5 s.")
@click.option("--output-dir", default="bench_out", show_default=True, type=click.Path(file_okay=False))
def command(bundle_dir, backends, precisions, batch_sizes, ensemble, warmup_ms, duration_s, stable_pct, max_windows, data,
            n_agree, price_per_hour, instance, compare_amp, full_suite, output_dir):
    """PyTorch vs ONNX Runtime vs OpenVINO vs TensorRT: throughput (timed until stable), latency, memory and
    agreement side by side."""
    from lenstrt.io import writable_dir

    writable_dir(output_dir, "--output-dir")  # before any work: an unusable output is one line

    from lenstrt.bench.harness import BenchSpec, run_bench
    from lenstrt.bench.report import print_table, write
    from lenstrt.cli.options import int_list

    if full_suite:
        from lenstrt.runtime.registry import bench_names

        backends, batch_sizes, ensemble, duration_s = (",".join(bench_names()), FULL_SUITE["batch_sizes"],
                                                       FULL_SUITE["ensemble"], FULL_SUITE["duration_s"])
    bl = [b.strip() for b in backends.split(",") if b.strip()]
    if compare_amp and "torch" in bl and "torch-amp" not in bl:
        bl.insert(bl.index("torch") + 1, "torch-amp")
    from lenstrt.runtime.registry import bench_names, precision_help

    bad = [b for b in bl if b not in bench_names()]
    if bad:
        raise click.BadParameter(f"unknown backend(s) {bad}; choose from {', '.join(bench_names())}",
                                 param_hint="--backends")
    from lenstrt.bench.harness import supports

    PRECISIONS = options.precision_names()

    pl = [p.strip() for p in precisions.split(",") if p.strip()] or ["auto"]
    bad = [p for p in pl if p not in PRECISIONS]
    if bad:
        raise click.BadParameter(f"unknown precision(s) {bad}; choose from {', '.join(PRECISIONS)}",
                                 param_hint="--precision")
    for p in pl:
        if not any(supports(b, p) for b in bl):
            raise click.BadParameter(f"no backend in {','.join(bl)} runs {p} ({precision_help()})",
                                     param_hint="--precision")
    spec = BenchSpec(backends=tuple(bl), precisions=tuple(pl), batch_sizes=tuple(int_list(batch_sizes) or [64]),
                     ensemble=tuple(e.strip() for e in ensemble.split(",")), warmup_ms=warmup_ms, duration_s=duration_s,
                     price_per_hour=price_per_hour, instance=instance, n_agree=n_agree, stable_pct=stable_pct,
                     max_windows=max_windows)
    from lenstrt.bundle import Bundle

    Bundle(bundle_dir)  # a missing or corrupt bundle is one line before anything is printed
    click.echo(f"benchmarking {bundle_dir}: each configuration in its own process")
    report = run_bench(bundle_dir, spec, list(data) or None, progress=click.echo)
    paths = write(report, output_dir)
    print_table(report)
    click.echo(f"report: {paths['md']}  {paths['json']}  {paths['png']}")
