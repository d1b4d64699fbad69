from __future__ import annotations

import click


@click.command("preview")
@click.argument("data", nargs=-1, required=True)
@click.option("--out", type=click.Path(dir_okay=False), default="gallery.png", show_default=True)
@click.option("--per-kind", type=click.IntRange(min=1), default=8, show_default=True)
def command(data, out, per_kind):
    """Colour-composite gallery of cutouts (lenses, galaxies, companions) to look at."""
    from lenstrt.preview import write_gallery

    click.echo(f"gallery: {write_gallery(list(data), out, per_kind)}")
