"""`lenstrt cloud estimate`: hours and dollars to score N cutouts on each instance, on-demand and spot.

Throughput per GPU comes from a `lenstrt bench` JSON when given (its fastest successful ensemble
configuration, applied per GPU and labelled "measured on <machine>"), else from gpu_assumptions.csv
(documented assumptions, labelled as such).
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lenstrt.cloud.pricing import Price, hours_for, load_prices
from lenstrt.errors import ConfigError, InputError

_ASSUMPTIONS = Path(__file__).with_name("gpu_assumptions.csv")


@dataclass(frozen=True)
class Row:
    instance: str
    cloud: str
    gpu: str
    gpus: int
    img_s: float
    throughput_source: str
    hours: float
    on_demand_usd: float
    spot_usd: float
    on_demand_usd_h: float
    spot_usd_h: float
    price_date: str


def gpu_assumptions() -> dict[str, dict[str, str]]:
    with open(_ASSUMPTIONS, newline="") as fh:
        return {r["gpu"]: r for r in csv.DictReader(fh)}


def bench_throughput(path: str | Path) -> tuple[float, str]:
    """Best images/s among the bench's successful ensemble rows (members alone do not count)."""
    try:
        rep = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable bench.json ({exc}); run `lenstrt bench` first") from exc
    rows = [r for r in rep.get("rows", []) if r.get("ok") and not r.get("member")]
    if not rows:
        raise InputError(f"{path}: no successful ensemble rows in this bench.json")
    best = max(rows, key=lambda r: r["images_per_s"])
    env = rep.get("env", {})
    gpus = env.get("gpus")
    where = gpus[0]["name"] if isinstance(gpus, list) and gpus else f"{env.get('cpu', 'CPU')} x{env.get('cpu_cores')}"
    return float(best["images_per_s"]), f"measured on {where} ({best['label']})"


def estimate(n_cutouts: float, instances: list[str] | None = None, bench: str | None = None,
             prices: dict[str, Price] | None = None) -> list[Row]:
    prices = prices or load_prices()
    names = instances or list(prices)
    unknown = [i for i in names if i not in prices]
    if unknown:
        raise ConfigError(f"unknown instance(s) {', '.join(unknown)}; known: {', '.join(sorted(prices))}")
    measured = bench_throughput(bench) if bench else None
    assume = gpu_assumptions()
    rows = []
    for name in names:
        p = prices[name]
        if measured:
            per_gpu, src = measured
        elif p.gpu in assume:
            per_gpu, src = float(assume[p.gpu]["assumed_img_s"]), f"assumption for {p.gpu} (gpu_assumptions.csv)"
        else:
            raise ConfigError(f"no throughput assumption for GPU {p.gpu}; pass --bench bench.json")
        img_s = per_gpu * p.gpus
        h = hours_for(n_cutouts, img_s)
        rows.append(Row(name, p.cloud, p.gpu, p.gpus, img_s, src, h, h * p.on_demand_usd_h, h * p.spot_usd_h,
                        p.on_demand_usd_h, p.spot_usd_h, p.price_date))
    return sorted(rows, key=lambda r: r.spot_usd)


def as_dicts(rows: list[Row]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]
