"""Export: checkpoint -> ONNX (validated) -> fp16 ONNX -> TensorRT engine, all in one bundle.

Each step is a small function with explicit inputs and outputs that ends in a check against its
reference (Polygraphy's loader style); `pipeline.export_bundle` chains them.
"""
