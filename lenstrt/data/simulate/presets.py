"""Survey presets: YAML files in configs/surveys/ (or any path given with --survey)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
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


# Negative kinds and their default share of the non-lenses (docs/simulation.md says what each is).
NEGATIVE_MIX = {"galaxy": 0.3, "companion": 0.3, "ring": 0.08, "spiral": 0.08, "merger": 0.08, "edgeon": 0.08,
                "group": 0.08}


@dataclass(frozen=True)
class Population:
    theta_e: tuple[float, float] = (0.5, 3.5)       # Einstein radius, arcsec (log-uniform)
    lens_mag: tuple[float, float] = (17.5, 21.0)    # lens galaxy at theta_E = 1", reference band
    lens_size: tuple[float, float] = (0.6, 2.6)     # galaxy R_e = theta_E * U(lo, hi) + 0.2", capped (SLACS sizes)
    lens_size_scatter: float = 0.0                  # ln-normal sigma on that R_e (0: none), every kind alike
    lens_colors: dict[str, float] = field(default_factory=dict)
    source_mag: tuple[float, float] = (21.0, 24.0)  # companions and field galaxies only: a lensed source's
    source_colors: dict[str, float] = field(default_factory=dict)  # magnitude follows from its arc S/N
    companion_mag: tuple[float, float] = (20.5, 25.0)
    companion_arc_size: tuple[float, float] = (0.1, 0.6)  # semi-major R_e (log-uniform) of the tangential companions
    color_scatter: float = 0.1
    arc_snr: tuple[float, float] = (10.0, 3000.0)     # lensed arcs: S/N drawn log-uniform (docs/simulation.md)
    min_arc_snr: float = 10.0                       # kept for presets that set only the floor
    negative_mix: dict[str, float] = field(default_factory=lambda: dict(NEGATIVE_MIX))
    lens_with_companions: float = 0.3               # share of lenses that also have companions


@dataclass(frozen=True)
class Nuisances:
    """What varies from cutout to cutout and band to band (all off: `Nuisances.off()`)."""
    seeing_scatter: float = 0.2        # lognormal sigma of the per-cutout seeing factor
    band_seeing_scatter: float = 0.05  # extra per band
    moffat_fraction: float = 0.5       # share of cutouts whose PSF is a Moffat (else Gaussian)
    moffat_beta: tuple[float, float] = (2.5, 4.5)
    psf_ellipticity: float = 0.08      # max |e| of the PSF
    band_offset: float = 0.04          # arcsec, sigma of the astrometric offset of each band
    sky_scatter: float = 0.3           # mag, sigma of the sky brightness per cutout and band
    depth_scatter: float = 0.3         # lognormal sigma of the exposure time (coadd depth) per cutout and band
    sky_residual: float = 0.5          # sigma of a constant left by sky subtraction, in units of the pixel noise
    neighbours: float = 0.8            # mean number of field galaxies per cutout
    stars: float = 0.3                 # mean number of stars per cutout
    saturated: float = 0.05            # share of cutouts with a saturated star (spikes, bleed trail)
    cosmic_rays: float = 0.05          # share of cutouts with cosmic-ray residuals in one band
    masked: float = 0.03               # share of cutouts with a masked (NaN or zero) region

    @classmethod
    def off(cls) -> Nuisances:
        return cls(**{f.name: 0.0 for f in fields(cls) if f.name != "moffat_beta"})


@dataclass(frozen=True)
class Survey:
    name: str
    pixel_scale: float
    image_size: int
    bands: tuple[Band, ...]
    population: Population
    reference_band: str
    supersample: int = 2
    nuisances: Nuisances = field(default_factory=Nuisances)

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


def _section(raw: dict[str, Any], key: str) -> dict[str, Any]:
    """A preset's `population:` or `nuisances:` mapping (absent or empty: {}), YAML lists as tuples."""
    sec = raw.get(key) or {}
    if not isinstance(sec, dict):
        raise TypeError(f"'{key}' holds {type(sec).__name__}, not a mapping of keys")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in sec.items()}


def load_survey(name_or_path: str, image_size: int | None = None) -> Survey:
    import yaml

    path = _find(name_or_path)
    try:
        raw: dict[str, Any] = yaml.safe_load(path.read_text())
        if not isinstance(raw, dict):
            raise TypeError(f"the file holds {type(raw).__name__}, not a mapping of keys")
        bands = tuple(Band(**b) for b in raw["bands"])
        pop = Population(**_section(raw, "population"))
        nui = Nuisances(**_section(raw, "nuisances"))
        survey = Survey(
            name=raw["name"],
            pixel_scale=float(raw["pixel_scale"]),
            image_size=int(image_size or raw["image_size"]),
            bands=bands,
            population=pop,
            reference_band=raw.get("reference_band", bands[-1].name),
            supersample=int(raw.get("supersample", 2)),
            nuisances=nui,
        )
    except (KeyError, TypeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: invalid survey preset ({exc}); compare with configs/surveys/lsst-gri.yaml") from exc
    # (key, lo may be 0, what the range means): a log-uniform range cannot start at 0
    for key, zero_ok, what in (("lens_size", True, "R_e = theta_E * U(lo, hi) + 0.2\"; the default is [0.6, 2.6]"),
                               ("companion_arc_size", False, "arcsec, log-uniform; the default is [0.1, 0.6]")):
        size = getattr(pop, key)
        if not (isinstance(size, tuple) and len(size) == 2 and all(isinstance(v, (int, float)) for v in size)
                and (size[0] >= 0 if zero_ok else size[0] > 0) and size[0] <= size[1]):
            raise ConfigError(f"{path}: {key} {size!r} must be [lo, hi] with {'0 <=' if zero_ok else '0 <'} lo <= hi "
                              f"({what})")
    scatter = pop.lens_size_scatter
    if isinstance(scatter, bool) or not (isinstance(scatter, (int, float)) and 0 <= scatter <= 1.5):  # YAML's yes
        raise ConfigError(f"{path}: lens_size_scatter {scatter!r} must be a number from 0 to 1.5 (the ln-normal sigma "
                          "of the lens galaxy's R_e; 0.5 is ~0.2 dex)")
    bad = set(pop.negative_mix) - set(NEGATIVE_MIX)
    if bad or not sum(pop.negative_mix.values()) > 0:
        raise ConfigError(f"{path}: negative_mix {pop.negative_mix}: kinds must be among {', '.join(NEGATIVE_MIX)} "
                          "with a positive total")
    if survey.reference_band not in survey.band_names:
        raise ConfigError(f"{path}: reference_band '{survey.reference_band}' is not one of {survey.band_names}")
    return survey
