"""Survey presets: YAML files in configs/surveys/ (or any path given with --survey)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lenstrt.errors import ConfigError

_REPO_SURVEYS = Path(__file__).resolve().parents[3] / "configs" / "surveys"


@dataclass(frozen=True)
class Band:
    name: str
    zero_point: float     # magnitude giving 1 e-/s
    sky_mag: float        # mag / arcsec^2
    seeing: float         # PSF FWHM, arcsec (Gaussian)
    exposure_time: float  # seconds per exposure
    n_exposures: int
    read_noise: float     # e- per exposure per pixel

    @property
    def total_time(self) -> float:
        return self.exposure_time * self.n_exposures


@dataclass(frozen=True)
class Population:
    theta_e: tuple[float, float] = (0.8, 2.2)
    lens_mag: tuple[float, float] = (18.0, 20.5)
    lens_colors: dict[str, float] = field(default_factory=dict)
    source_mag: tuple[float, float] = (21.0, 24.0)
    source_colors: dict[str, float] = field(default_factory=dict)
    companion_mag: tuple[float, float] = (21.0, 24.0)
    color_scatter: float = 0.1
    min_arc_snr: float = 15.0


@dataclass(frozen=True)
class Survey:
    name: str
    pixel_scale: float
    image_size: int
    bands: tuple[Band, ...]
    population: Population
    reference_band: str
    supersample: int = 2

    @property
    def band_names(self) -> list[str]:
        return [b.name for b in self.bands]


def available() -> list[str]:
    dirs = [Path.cwd() / "configs" / "surveys", _REPO_SURVEYS]
    return sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.yaml")})


def _find(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise ConfigError(f"{p}: survey preset file not found")
        return p
    for d in (Path.cwd() / "configs" / "surveys", _REPO_SURVEYS):
        cand = d / f"{name_or_path}.yaml"
        if cand.is_file():
            return cand
    raise ConfigError(
        f"unknown survey '{name_or_path}'; choose one of {', '.join(available()) or '(none found)'} "
        "or pass a preset YAML path"
    )


def load_survey(name_or_path: str, image_size: int | None = None) -> Survey:
    import yaml

    path = _find(name_or_path)
    try:
        raw: dict[str, Any] = yaml.safe_load(path.read_text())
        bands = tuple(Band(**b) for b in raw["bands"])
        pop_raw = raw.get("population", {})
        pop = Population(**{k: tuple(v) if isinstance(v, list) else v for k, v in pop_raw.items()})
        survey = Survey(
            name=raw["name"],
            pixel_scale=float(raw["pixel_scale"]),
            image_size=int(image_size or raw["image_size"]),
            bands=bands,
            population=pop,
            reference_band=raw.get("reference_band", bands[-1].name),
            supersample=int(raw.get("supersample", 2)),
        )
    except (KeyError, TypeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: invalid survey preset ({exc}); compare with configs/surveys/lsst-gri.yaml") from exc
    if survey.reference_band not in survey.band_names:
        raise ConfigError(f"{path}: reference_band '{survey.reference_band}' is not one of {survey.band_names}")
    return survey
