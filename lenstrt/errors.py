"""One error family for everything a user can fix. The CLI prints these as one line and exits 1;
any other exception is a bug and keeps its traceback."""

from __future__ import annotations


class LenstrtError(Exception):
    """Base class: a problem the user can fix. The message says what, where, and how to fix it."""


class InputError(LenstrtError):
    """Bad or unreadable input data (cutout files, catalogs)."""


class ConfigError(LenstrtError):
    """Bad configuration file or option values."""


class CheckpointError(LenstrtError):
    """A checkpoint that cannot be loaded or lacks what a stage needs."""


class ExportError(LenstrtError):
    """Export failed: conversion, validation tolerance, or a missing builder."""


class BundleError(LenstrtError):
    """A bundle that is missing, corrupt, or does not fit this machine."""


class BackendError(LenstrtError):
    """A runtime backend that is unavailable or failed to run."""
