"""Instance prices (prices.csv, shipped with lenstrt: approximate list prices with their date and
source; refresh before budgeting) and the cost arithmetic shared by bench and cloud estimate."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from lenstrt.errors import ConfigError

_TABLE = Path(__file__).with_name("prices.csv")


@dataclass(frozen=True)
class Price:
    instance: str
    cloud: str
    region: str
    gpu: str
    gpus: int
    on_demand_usd_h: float
    spot_usd_h: float
    price_date: str
    source: str


def load_prices(path: str | Path | None = None) -> dict[str, Price]:
    with open(path or _TABLE, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {r["instance"]: Price(r["instance"], r["cloud"], r["region"], r["gpu"], int(r["gpus"]),
                                 float(r["on_demand_usd_h"]), float(r["spot_usd_h"]), r["price_date"], r["source"])
            for r in rows}


def lookup(instance: str) -> Price:
    prices = load_prices()
    if instance not in prices:
        raise ConfigError(f"unknown instance '{instance}'; known: {', '.join(sorted(prices))} "
                          "(or give --price-per-hour)")
    return prices[instance]


def usd_per_million(images_per_s: float, usd_per_hour: float) -> float:
    """Dollars to score one million cutouts at a sustained throughput."""
    if images_per_s <= 0:
        return float("inf")
    return usd_per_hour / (images_per_s * 3600.0) * 1e6


def hours_for(n_images: float, images_per_s: float) -> float:
    return n_images / images_per_s / 3600.0 if images_per_s > 0 else float("inf")
