from __future__ import annotations

import click


@click.command("train")
def command():
    """(not yet available)"""
    raise click.ClickException("'lenstrt train' is not implemented yet")
