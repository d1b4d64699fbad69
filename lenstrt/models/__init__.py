"""Model registry: `create_model(name, in_bands, image_size, ...)`; one module per family."""

from lenstrt.models.registry import (
                                     ExportSpec,
                                     create_model,
                                     export_spec,
                                     list_models,
                                     prefers_channels_last,
                                     register_model,
)

__all__ = ["ExportSpec", "create_model", "export_spec", "list_models", "prefers_channels_last", "register_model"]
