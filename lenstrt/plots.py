"""The PNGs people look at: galleries, ROC, reliability, completeness, bench throughput."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def composite(image: np.ndarray) -> np.ndarray:
    """One cutout [C, H, W] -> RGB [H, W, 3] in 0..1. Three or more bands: Lupton et al. (2004) asinh
    colour composite of the last three (i, r, g -> R, G, B); one band: an asinh grey stretch."""
    img = np.asarray(image, dtype=np.float64)
    border = np.concatenate([img[:, :4].reshape(len(img), -1), img[:, -4:].reshape(len(img), -1)], axis=1)
    sigma = 1.4826 * np.median(np.abs(border - np.median(border, axis=1, keepdims=True)), axis=1) + 1e-12
    norm = (img - np.median(border, axis=1)[:, None, None]) / sigma[:, None, None]
    if len(norm) >= 3:
        from astropy.visualization import make_lupton_rgb

        r, g, b = norm[-1], norm[-2], norm[-3]
        return make_lupton_rgb(r, g, b, minimum=-1.0, stretch=8.0, Q=8.0).astype(np.float64) / 255.0
    grey = np.arcsinh(np.clip(norm[0], -3, None) / 3.0)
    grey = (grey - grey.min()) / (grey.max() - grey.min() + 1e-12)
    return np.repeat(grey[..., None], 3, axis=-1)


def gallery(images: np.ndarray, titles: Sequence[str], path: str | Path, ncols: int = 8,
            suptitle: str | None = None) -> Path:
    plt = _plt()
    n = len(images)
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.6 * ncols, 1.75 * nrows + (0.4 if suptitle else 0)),
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, img, title in zip(axes.ravel(), images, titles):
        ax.imshow(composite(img), origin="lower", interpolation="nearest")
        ax.set_title(title, fontsize=6)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4))
    for label, (fpr, tpr) in curves.items():
        ax.plot(np.clip(fpr, 1e-6, 1), tpr, label=label)
    for x in (1e-3, 1e-2):
        ax.axvline(x, color="grey", lw=0.5, ls=":")
    ax.set_xscale("log")
    ax.set_xlim(1e-5, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate (completeness)")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("ROC")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def reliability(bin_conf: np.ndarray, bin_acc: np.ndarray, bin_count: np.ndarray, ece: float,
                path: str | Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ok = bin_count > 0
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.plot(bin_conf[ok], bin_acc[ok], marker="o")
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed lens fraction")
    ax.set_title(f"reliability (ECE = {ece:.4f})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def binned(x_centers: np.ndarray, values: dict[str, np.ndarray], xlabel: str, ylabel: str, path: str | Path,
           title: str = "") -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    for label, v in values.items():
        ax.plot(x_centers, v, marker="o", label=label)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def bars(groups: dict[str, dict[str, float]], ylabel: str, path: str | Path, title: str = "") -> Path:
    """groups: {x label (e.g. batch size): {series (backend): value}}."""
    plt = _plt()
    xs = list(groups)
    series = sorted({s for g in groups.values() for s in g})
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(xs) * max(1, len(series)) / 2), 4))
    width = 0.8 / max(1, len(series))
    for i, s in enumerate(series):
        ax.bar(np.arange(len(xs)) + i * width, [groups[x].get(s, 0) for x in xs], width, label=s)
    ax.set_xticks(np.arange(len(xs)) + 0.4 - width / 2, xs)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def strata_heatmap(completeness: np.ndarray, counts: np.ndarray, row_labels: Sequence[str],
                   col_labels: Sequence[str], path: str | Path, title: str = "",
                   xlabel: str = "arc S/N", ylabel: str = "Einstein radius θE [arcsec]") -> Path:
    """Completeness per (row, column) stratum, each cell labelled with its completeness and n; empty
    cells are left blank rather than coloured as 0."""
    plt = _plt()
    comp = np.asarray(completeness, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(1.1 * len(col_labels) + 2.2, 0.55 * len(row_labels) + 1.6))
    ax.set_facecolor("0.9")  # empty strata: grey, not a colour of the scale
    im = ax.imshow(np.ma.masked_invalid(comp), origin="lower", cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for i in range(comp.shape[0]):
        for j in range(comp.shape[1]):
            if counts[i, j]:
                ax.text(j, i, f"{comp[i, j]:.2f}\nn={counts[i, j]}", ha="center", va="center", fontsize=7,
                        color="black" if comp[i, j] > 0.6 else "white")
    ax.set_xticks(range(len(col_labels)), col_labels)
    ax.set_yticks(range(len(row_labels)), row_labels)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="completeness")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
