"""Options shared by several commands, defined once."""

from __future__ import annotations

import click

quiet = click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
config = click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                      help="YAML config (see configs/); explicit flags override it.")


def int_list(value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError as exc:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from exc
