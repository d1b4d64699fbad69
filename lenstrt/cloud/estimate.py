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
    """One instance's estimate: its price-table entry plus what scoring N cutouts on it takes."""
    price: Price
    img_s: float
    throughput_source: str
    hours: float

    def __getattr__(self, name: str):  # instance, cloud, gpu, gpus, *_usd_h, price_date come from the price
        return getattr(self.__dict__["price"], name)

    @property
    def on_demand_usd(self) -> float:
        return self.hours * self.price.on_demand_usd_h

    @property
    def spot_usd(self) -> float:
        return self.hours * self.price.spot_usd_h


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
        rows.append(Row(p, img_s, src, hours_for(n_cutouts, img_s)))
    return sorted(rows, key=lambda r: r.spot_usd)


def as_dicts(rows: list[Row]) -> list[dict[str, Any]]:
    return [{**asdict(r.price), "img_s": r.img_s, "throughput_source": r.throughput_source, "hours": r.hours,
             "on_demand_usd": r.on_demand_usd, "spot_usd": r.spot_usd} for r in rows]
