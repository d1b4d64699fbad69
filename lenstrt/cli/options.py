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


def parse_mix(value: str) -> tuple[tuple[str, float], ...]:
    """"companion=0.4,ring=0.2" -> (("companion", 0.4), ("ring", 0.2)); kinds are checked by the simulator."""
    try:
        pairs = [item.split("=") for item in value.split(",") if item.strip()]
        return tuple((k.strip(), float(v)) for k, v in pairs)
    except ValueError as exc:
        raise click.BadParameter(f"expected KIND=WEIGHT,... (e.g. companion=0.4,galaxy=0.6), got {value!r}") from exc


def backend_help(bench: bool = False) -> str:
    """The --backend(s) help, from the backend registry (one declaration per backend)."""
    from lenstrt.runtime.registry import CHOICES

    names = [n for n, c in CHOICES.items() if bench or not c.bench_only]
    head = "" if bench else "auto: the fastest validated here, says why; "
    return head + "; ".join(f"{n}: {CHOICES[n].help}" for n in names)


def precision_names() -> list[str]:
    from lenstrt.runtime.registry import PRECISIONS

    return ["auto", *PRECISIONS]
