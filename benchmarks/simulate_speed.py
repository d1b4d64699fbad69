"""Simulator throughput (systems/s), in-process, after a warm-up batch. Not a test: run it and read.

    .venv/bin/python benchmarks/simulate_speed.py [--survey lsst-gri] [--n 4096] [--repeats 3]
"""

import argparse
import time

import numpy as np
import torch

from lenstrt.data.simulate import simulate_arrays
from lenstrt.data.simulate.presets import load_survey


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--survey", default="lsst-gri")
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    survey = load_survey(a.survey)
    simulate_arrays(survey, 256, np.random.default_rng(0))  # warm-up
    rates = []
    for r in range(a.repeats):
        t = time.perf_counter()
        simulate_arrays(survey, a.n, np.random.default_rng(r + 1))
        rates.append(a.n / (time.perf_counter() - t))
    print(f"{a.survey} {survey.image_size}x{survey.image_size} x{len(survey.bands)} bands, torch threads "
          f"{torch.get_num_threads()}: {np.median(rates):,.0f} systems/s (median of {a.repeats}: "
          + ", ".join(f"{x:,.0f}" for x in rates) + ")")


if __name__ == "__main__":
    main()
