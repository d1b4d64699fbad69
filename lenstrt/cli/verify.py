from __future__ import annotations

import json

import click


@click.command("verify")
@click.argument("bundle_dir", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON record per file.")
def command(bundle_dir: str, as_json: bool) -> None:
    """Check a bundle: every file the manifest lists is inside it, present, and has the recorded sha256.

    Exit 0 when all are, 1 otherwise. serve and bench make the same check on each file they load; run
    this after copying a bundle between machines."""
    import time

    from lenstrt.bundle import Bundle
    from lenstrt.errors import BundleError

    t0 = time.perf_counter()
    report = Bundle(bundle_dir).verify()
    dt = time.perf_counter() - t0
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        for r in report:
            mark = click.style("ok  ", fg="green") if r["ok"] else click.style("BAD ", fg="red")
            click.echo(f"{mark} {r['path']}" + ("" if r["ok"] else f"  {r['error']}"))
    bad = [r for r in report if not r["ok"]]
    size = sum(r.get("bytes") or 0 for r in report) / 2**20
    if bad:
        raise BundleError(f"{bundle_dir}: {len(bad)} of {len(report)} files failed verification (listed above)")
    if not as_json:
        click.echo(f"{bundle_dir}: {len(report)} files, {size:.1f} MiB verified in {dt:.2f} s")
