"""onnxruntime on its CPU execution provider, reading the variant's .onnx (QDQ int8 included)."""

from edgebench.runtimes import Runtime, register

register(Runtime(
    name="onnxruntime",
    format="onnx",
    distribution="onnxruntime",
    module="onnxruntime",
    install_hint="pip install onnxruntime",
    device_requirement="onnxruntime",
    description="Microsoft onnxruntime, CPU execution provider",
))
