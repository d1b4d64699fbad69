from __future__ import annotations

import click


@click.command("bench")
def command():
    """(not yet available)"""
    raise click.ClickException("'lenstrt bench' is not implemented yet")
