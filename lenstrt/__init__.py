"""lenstrt: strong-lens classifiers from simulation to fast, validated inference at survey scale."""

__version__ = "0.1.0"
