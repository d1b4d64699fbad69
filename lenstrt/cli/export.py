from __future__ import annotations

import click


@click.command("export")
def command():
    """(not yet available)"""
    raise click.ClickException("'lenstrt export' is not implemented yet")
