from __future__ import annotations

import click

from lenstrt.cli import options


@click.command("simulate")
@click.option("--n", "n", type=click.IntRange(min=1), required=True, help="Number of systems.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same bytes.")
@click.option("--survey", default="lsst-gri", show_default=True, help="Preset name (configs/surveys/) or YAML path.")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Output directory for the shards.")
@click.option("--shard-size", type=click.IntRange(min=1), default=10_000, show_default=True)
@click.option("--lens-fraction", type=click.FloatRange(0, 1), default=0.5, show_default=True)
@click.option("--companion-fraction", type=click.FloatRange(0, 1), default=None,
              help="Share of the non-lenses that are galaxies with companions (the others keep their proportions).")
@click.option("--negative-mix", default=None, metavar="KIND=W,...",
              help="Non-lens kinds and weights, e.g. galaxy=0.2,companion=0.3,ring=0.1,spiral=0.1,merger=0.1,"
                   "edgeon=0.1,group=0.1 (the preset's mix when omitted; docs/simulation.md).")
@click.option("--image-size", type=click.IntRange(min=16), default=None, help="Override the preset's cutout size.")
@click.option("--preview", is_flag=True, help="Also write gallery.png (lenses and non-lenses).")
@click.option("--storage", type=click.Choice(["float32", "float16", "zstd", "float16-zstd"]), default="float32",
              show_default=True, help="Pixel storage: float16 halves the bytes, zstd compresses (docs/serve.md).")
@options.quiet
def command(n, seed, survey, out, shard_size, lens_fraction, companion_fraction, negative_mix, image_size, preview,
            storage, quiet):
    """Simulate lens / non-lens cutouts (SIE+shear lenses over the survey's population, hard negatives by kind,
    per-cutout PSF, sky and artefacts) into HDF5 shards."""
    from lenstrt.io import writable_dir

    writable_dir(out, "--out")  # before any work: an unusable output is one line

    import time

    from lenstrt.data.simulate import SimSpec, simulate

    mix = options.parse_mix(negative_mix) if negative_mix else None
    t0 = time.perf_counter()
    meta = simulate(SimSpec(n=n, seed=seed, survey=survey, shard_size=shard_size, lens_fraction=lens_fraction,
                            companion_fraction=companion_fraction, image_size=image_size,
                            storage=storage, negative_mix=mix), out, progress=not quiet)
    dt = time.perf_counter() - t0
    click.echo(f"wrote {meta['n']} {meta['survey']} cutouts ({','.join(meta['bands'])}, {meta['image_size']}px) "
               f"in {len(meta['shards'])} shard(s) to {out} [{dt:.1f} s, {meta['n'] / dt:,.0f} systems/s]")
    if preview:
        from lenstrt.preview import write_gallery

        click.echo(f"gallery: {write_gallery(out, f'{out}/gallery.png')}")
