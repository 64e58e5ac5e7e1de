"""LiteRT (TensorFlow Lite) through ai-edge-litert, reading the variant's .tflite (XNNPACK)."""

from edgebench.runtimes import Runtime, register

register(Runtime(
    name="tflite",
    format="tflite",
    distribution="ai-edge-litert",
    module="ai_edge_litert.interpreter",
    install_hint="pip install ai-edge-litert (or: pip install 'edgebench[tflite]')",
    device_requirement="ai-edge-litert",
    description="Google LiteRT (TensorFlow Lite) interpreter with XNNPACK",
))
