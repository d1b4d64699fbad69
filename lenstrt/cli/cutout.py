from __future__ import annotations

import click

from lenstrt.cli import options


@click.command("cutout")
@click.option("--tiles", required=True,
              help="Tile files with a {band} placeholder, e.g. 'tiles/*_{band}.fits' (quote it): one FITS per band "
                   "per tile, with a WCS.")
@click.option("--catalog", required=True, type=click.Path(dir_okay=False),
              help="Object table (CSV, Parquet, FITS) with id, ra, dec (degrees) and any other columns.")
@click.option("--size", type=click.IntRange(min=8), default=64, show_default=True, help="Stamp size, pixels.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory for the shards.")
@click.option("--bands", default=None, help="Bands to cut, comma-separated [every band the pattern finds].")
@click.option("--columns", default=None, help="Catalog columns carried into the shards, comma-separated [all].")
@click.option("--shard-size", type=click.IntRange(min=1), default=10_000, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Processes cutting tiles.")
@click.option("--resume/--no-resume", default=True, show_default=True, help="Keep shards a killed run finished.")
@options.quiet
def command(tiles, catalog, size, out, bands, columns, shard_size, workers, resume, quiet):
    """Cut stamps around catalog positions from survey tiles into HDF5 shards for `lenstrt serve`."""
    from lenstrt.data.cutout import CutoutSpec, cutout

    def split(v):
        return None if v is None else tuple(x.strip() for x in v.split(",") if x.strip())

    spec = CutoutSpec(tiles=tiles, catalog=catalog, size=size, bands=split(bands), shard_size=shard_size,
                      columns=split(columns))
    s = cutout(spec, out, workers=workers, resume=resume, progress=not quiet, log=click.echo)
    click.echo(f"cut {s['stamps_this_run']:,} stamps this run ({s['stamps']:,} of {s['objects']:,} objects; "
               f"{s['edge_flagged']:,} at a tile edge, flagged; {s['outside']:,} outside every tile) into "
               f"{s['shards']} shard(s) in {out}" + (f" [{s['stamps_per_s']:,} stamps/s]" if s["stamps_per_s"] else ""))
