"""onnxruntime on its CPU execution provider, reading the variant's .onnx (QDQ int8 included)."""

from edgebench.runtimes import Runtime, register

register(Runtime(
    name="onnxruntime",
    format="onnx",
    distribution="onnxruntime",
    module="onnxruntime",
    install_hint="pip install onnxruntime",
    device_requirement="onnxruntime",
    # Kernels are picked per CPU (fp16 stays fp16 on ARMv8.2 cores, is cast to fp32 on x86):
    # the runner profiles one inference on the device and the host reads its kernels.
    precision_from="runner",
    executed_reader="edgebench.export.precision_onnx:read_ort_kernels",
    description="Microsoft onnxruntime, CPU execution provider",
))
