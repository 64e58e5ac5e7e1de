"""OpenVINO on its CPU plugin, reading the variant's .onnx directly (fp32, fp16, QDQ int8).

What precision ran is read back by the runner from the compiled model's performance counters
(`exec_type`, e.g. `jit_avx2_FP32`, `acl_f16`, `acl_I8`): OpenVINO picks kernels per device
(on ARMv8.2 cores an "fp32" model runs in f16 unless the profile's `inference_precision` says
otherwise), so the graph alone cannot say.
"""

from edgebench.runtimes import Runtime, register

register(Runtime(
    name="openvino",
    format="onnx",
    distribution="openvino",
    module="openvino",
    install_hint="pip install openvino (or: pip install 'edgebench[openvino]')",
    # The aarch64 wheel of 2026.4 is manylinux_2_35: with only older tags pip silently takes 2024.0.
    device_requirement="openvino==2026.4.1",
    precision_from="runner",
    description="Intel OpenVINO, CPU plugin",
))
