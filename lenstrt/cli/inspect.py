from __future__ import annotations

import click

from lenstrt.cli import options


@click.command("inspect")
@click.argument("paths", nargs=-1, metavar="SERVE_OUT | --merge GRADES.csv...")
@click.option("--out", default=None, type=click.Path(),
              help="Page directory to write (required unless --serve: then SERVE_OUT/inspect); with --merge, the "
                   "merged CSV [stdout].")
@click.option("--top", type=click.IntRange(min=1), default=1000, show_default=True,
              help="The N best-scored candidates (at or above --min-score).")
@click.option("--min-score", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Only candidates with a fused score at least this.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Threads writing tiles [cores, at most 8].")
@click.option("--serve", "serve_", is_flag=True,
              help="Serve the page over HTTP and write every grade into SERVE_OUT/grades.csv (atomically).")
@click.option("--host", default="127.0.0.1", show_default=True, help="--serve: address to bind (keep it local).")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="--serve: port (0: any free port).")
@click.option("--rebuild", is_flag=True, help="--serve: rebuild the page even if one for these options exists.")
@click.option("--merge", is_flag=True,
              help="Merge graders' CSV files (the PATHS) into one table per id: mean grade, agreement, Fleiss' kappa.")
@options.quiet
def command(paths, out, top, min_score, workers, serve_, host, port, rebuild, merge, quiet):
    """A static page to grade the candidates of a serve output from the keyboard (1-4, arrows), or merge
    graders' files (--merge). Open PAGE_DIR/index.html from disk; no server or network needed."""
    from pathlib import Path

    from lenstrt.errors import InputError

    if merge:
        from lenstrt.inspect.grades import MERGED_FIELDS, write_merged
        from lenstrt.inspect.grades import merge as merge_grades

        rows, stats = merge_grades(list(paths))
        kappa = stats["fleiss_kappa"]
        line = (f"{stats['ids']:,} ids graded by {len(stats['graders'])} grader(s) ({', '.join(stats['graders'])}); "
                f"{stats['ids_multiply_graded']:,} by two or more: mean agreement "
                f"{stats['mean_agreement'] if stats['mean_agreement'] is not None else 'n/a'}, Fleiss' kappa "
                f"{kappa if kappa is not None else 'n/a'}")
        if out:
            click.echo(f"{line}\nmerged: {write_merged(rows, out)}")
        else:
            import csv
            import sys

            w = csv.DictWriter(sys.stdout, fieldnames=MERGED_FIELDS, lineterminator="\n")
            w.writeheader()
            w.writerows(rows)
            click.echo(line, err=True)
        return
    if len(paths) != 1:
        raise InputError("inspect takes one SERVE_OUT directory (the --out of `lenstrt serve`), or --merge with "
                         "grades CSV files; see `lenstrt inspect --help`")
    serve_out = Path(paths[0])
    if out is None and not serve_:
        raise InputError("--out PAGE_DIR is needed (where index.html and its files go), e.g. "
                         f"--out {serve_out}/inspect")
    page_dir = Path(out) if out else serve_out / "inspect"

    from lenstrt.inspect.page import build_page, current_page

    meta = None if rebuild or not serve_ else current_page(serve_out, page_dir, top, min_score)
    if meta is None:
        import time

        t0 = time.perf_counter()
        meta = build_page(serve_out, page_dir, top=top, min_score=min_score, workers=workers, progress=not quiet)
        click.echo(f"{meta['n']:,} candidates, tiles and page data written in {time.perf_counter() - t0:.1f} s")
    else:
        click.echo(f"page for these candidates already built ({meta['built']}); --rebuild to build it again")
    click.echo(f"page: {meta['index_html']}")
    if not serve_:
        return
    from lenstrt.inspect.page import page_ids
    from lenstrt.inspect.server import make_server

    grades_csv = serve_out / "grades.csv"
    try:
        server = make_server(page_dir, grades_csv, host, port, ids=page_ids(page_dir), quiet=quiet)
    except OSError as exc:
        raise InputError(f"{host}:{port}: cannot listen ({exc.strerror or exc}); pass another --port "
                         "(or --port 0 for any free one)") from exc
    h, p = server.server_address[:2]
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.secho(f"warning: listening on {host}: anyone who can reach this machine can read the page and "
                    "post grades", fg="yellow", err=True)
    click.echo(f"serving http://{'127.0.0.1' if h == '0.0.0.0' else h}:{p}/  grades -> {grades_csv}  (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped; grades are in " + str(grades_csv))
    finally:
        server.server_close()
