"""The pixel scale a bundle was trained at, and the check of an input's against it: a model trained at
0.2"/px sees lenses 1.3x smaller at 0.263"/px (an Einstein radius of 1" spans 5 px, not 3.8)."""

from __future__ import annotations

from lenstrt.data.readers.base import MismatchError

DEFAULT_TOLERANCE = 0.03  # relative; survey WCS pixel scales vary by < 1% across a field


def training_pixel_scale(bundle_input: dict) -> float | None:
    """arcsec / px: the manifest's `input.pixel_scale` where export recorded it, else the survey preset
    named by `input.survey`; None when neither is known (a preset file that is not on this machine)."""
    if bundle_input.get("pixel_scale"):
        return float(bundle_input["pixel_scale"])
    name = bundle_input.get("survey")
    if not name:
        return None
    from lenstrt.data.simulate.presets import load_survey
    from lenstrt.errors import ConfigError

    try:
        return load_survey(str(name)).pixel_scale
    except ConfigError:
        return None


def check_pixel_scale(got: float | None, want: float | None, where: str, tolerance: float | None) -> None:
    if got is None or want is None or tolerance is None:
        return
    if abs(got / want - 1.0) > tolerance:
        raise MismatchError(f"{where}: pixel scale {got:.4g}\"/px, the bundle was trained at {want:.4g}\"/px "
                            f"({100 * (got / want - 1):+.1f}%, more than {100 * tolerance:.0f}%); resample the cutouts "
                            "to the training scale, or pass --ignore-pixel-scale to score them anyway")
