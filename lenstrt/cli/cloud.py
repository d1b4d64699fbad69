from __future__ import annotations

import json

import click


@click.group("cloud")
def command() -> None:
    """Cost estimates, AWS spot runs (boto3), and SkyPilot task files for any cloud."""


@command.command("estimate")
@click.option("--cutouts", type=click.FloatRange(min=1), required=True, help="How many cutouts to score (e.g. 1.5e9).")
@click.option("--bench", "bench_json", type=click.Path(dir_okay=False), default=None,
              help="bench.json: use its measured throughput instead of the GPU assumptions.")
@click.option("--instance", "instances", multiple=True, help="Limit to these instances (repeatable).")
@click.option("--spot", is_flag=True, help="Rank by spot cost (default: on-demand).")
@click.option("--live", is_flag=True, help="Refresh AWS prices from the Pricing API and spot history.")
@click.option("--region", default="us-east-1", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def estimate_cmd(cutouts, bench_json, instances, spot, live, region, as_json):
    """Hours and dollars for N cutouts on each instance, on-demand and spot; the cheapest choice."""
    from dataclasses import replace

    from lenstrt.cloud.estimate import as_dicts, estimate
    from lenstrt.cloud.pricing import load_prices

    prices = load_prices()
    note = f"prices: shipped table (lenstrt/cloud/prices.csv, dated {min(p.price_date for p in prices.values())})"
    if live:
        from lenstrt.cloud import aws

        try:
            fresh = aws.live_prices([n for n, p in prices.items() if p.cloud == "aws" and (not instances or n in instances)],
                                    region)
            for n, v in fresh.items():
                prices[n] = replace(prices[n], on_demand_usd_h=v["on_demand_usd_h"] or prices[n].on_demand_usd_h,
                                    spot_usd_h=v["spot_usd_h"] or prices[n].spot_usd_h, price_date="live")
            note = f"prices: AWS live ({region}) for AWS instances, shipped table for the others"
        except aws.CloudError as exc:
            note = f"prices: shipped table ({exc})"
    rows = estimate(cutouts, list(instances) or None, bench_json, prices)
    rows.sort(key=lambda r: r.spot_usd if spot else r.on_demand_usd)
    if as_json:
        click.echo(json.dumps({"cutouts": cutouts, "note": note, "rows": as_dicts(rows)}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{cutouts:,.0f} cutouts")
    for h in ("instance", "cloud", "GPUs", "img/s", "hours", "on-demand $", "spot $", "throughput from"):
        t.add_column(h, justify="left" if h in ("instance", "cloud", "throughput from") else "right")
    for r in rows:
        t.add_row(r.instance, r.cloud, f"{r.gpus}x {r.gpu}", f"{r.img_s:,.0f}", f"{r.hours:,.1f}",
                  f"{r.on_demand_usd:,.0f}", f"{r.spot_usd:,.0f}", r.throughput_source)
    c = Console(width=170)
    c.print(t)
    best = rows[0]
    c.print(f"cheapest ({'spot' if spot else 'on-demand'}): {best.instance}: "
            f"${best.spot_usd if spot else best.on_demand_usd:,.0f} in {best.hours:,.1f} h. {note}")


@command.command("launch")
@click.option("--instance", "instance_type", required=True)
@click.option("--spot/--on-demand", default=True, show_default=True)
@click.option("--bundle", required=True, help="Local bundle directory (uploaded) or s3:// URL.")
@click.option("--input", "input_s3", required=True, help="s3:// prefix of the cutouts.")
@click.option("--out", "out_s3", required=True, help="s3:// prefix for results and summary.json.")
@click.option("--max-hours", type=float, default=12.0, show_default=True, help="Hard limit: the instance terminates.")
@click.option("--ami", default=None, help="AMI id [the AWS Deep Learning AMI via SSM].")
@click.option("--region", default=None)
@click.option("--iam-instance-profile", default=None, help="Instance profile with S3 access (no keys in user data).")
@click.option("--key-name", default=None)
@click.option("--lenstrt-spec", default=None,
              help="What the instance pip-installs: a wheel file or a pip requirement (a git URL...) "
                   "[a wheel of this lenstrt, built here and shipped with the job].")
@click.option("--endpoint-url", default=None, hidden=True)
def launch_cmd(instance_type, spot, bundle, input_s3, out_s3, max_hours, ami, region, iam_instance_profile, key_name,
               lenstrt_spec, endpoint_url):
    """Start a (spot) GPU instance that builds engines, serves, uploads results and terminates itself."""
    from lenstrt.cloud import aws

    r = aws.launch(instance_type, bundle, input_s3, out_s3, spot=spot, ami=ami, region=region, max_hours=max_hours,
                   iam_instance_profile=iam_instance_profile, key_name=key_name, lenstrt_spec=lenstrt_spec,
                   endpoint_url=endpoint_url)
    click.echo(f"launched {r['instance_id']} ({instance_type}, {'spot' if spot else 'on-demand'}) job {r['job']}; "
               f"terminates itself when done or after {max_hours} h; results: {out_s3}")


@command.command("status")
@click.option("--region", default=None)
@click.option("--endpoint-url", default=None, hidden=True)
def status_cmd(region, endpoint_url):
    """lenstrt's own instances (found by tag)."""
    from lenstrt.cloud import aws

    rows = aws.status(region, endpoint_url)
    if not rows:
        click.echo("no lenstrt instances")
    for r in rows:
        click.echo(f"{r['instance_id']}  {r['state']:<13} {r['type']:<14} {'spot' if r['spot'] else 'on-demand':<9} "
                   f"{r['job']}  {r['out']}")


@command.command("logs")
@click.argument("instance_id")
@click.option("--region", default=None)
@click.option("--endpoint-url", default=None, hidden=True)
def logs_cmd(instance_id, region, endpoint_url):
    """The instance's console output (bootstrap log), credentials redacted."""
    from lenstrt.cloud import aws

    click.echo(aws.logs(instance_id, region, endpoint_url))


@command.command("terminate")
@click.argument("instance_ids", nargs=-1)
@click.option("--region", default=None)
@click.option("--endpoint-url", default=None, hidden=True)
def terminate_cmd(instance_ids, region, endpoint_url):
    """Terminate lenstrt instances (all running ones when no id is given); refuses untagged instances."""
    from lenstrt.cloud import aws

    done = aws.terminate(list(instance_ids), region, endpoint_url)
    click.echo(f"terminating: {', '.join(done) if done else 'nothing to terminate'}")


@command.command("skypilot")
@click.option("--accelerator", default="L4:1", show_default=True)
@click.option("--bundle", required=True, help="Bundle location (local path or bucket URL).")
@click.option("--input", "input_url", required=True)
@click.option("--out", "out_url", required=True, help="Bucket URL for results (mounted, so spot recovery resumes).")
@click.option("--spot/--on-demand", default=True, show_default=True)
@click.option("--clouds", default="aws,gcp,azure", show_default=True)
@click.option("--idle-minutes", type=int, default=10, show_default=True, help="Autostop after this idle time.")
@click.option("--output", "output_path", default="lenstrt-sky.yaml", show_default=True)
@click.option("--lenstrt-spec", default=None,
              help="What the cluster pip-installs: a wheel file or a pip requirement [a wheel of this lenstrt].")
def skypilot_cmd(accelerator, bundle, input_url, out_url, spot, clouds, idle_minutes, output_path, lenstrt_spec):
    """Write a SkyPilot task YAML for the job (sky launch / sky jobs launch)."""
    from pathlib import Path

    from lenstrt.cloud.package import resolve
    from lenstrt.cloud.skypilot import task, to_yaml

    # the wheel sits beside the task file: SkyPilot mounts it from there when the task launches
    install = resolve(lenstrt_spec, Path(output_path).resolve().parent / "lenstrt-wheels")
    spec = task(accelerator, bundle, input_url, out_url, spot=spot, clouds=tuple(clouds.split(",")),
                idle_minutes=idle_minutes, install=install)
    with open(output_path, "w") as fh:
        fh.write(to_yaml(spec))
    click.echo(f"wrote {output_path}: `sky jobs launch {output_path}` (managed spot) or `sky launch {output_path}`")
