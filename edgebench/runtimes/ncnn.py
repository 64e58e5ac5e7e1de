"""Tencent ncnn on the CPU, reading the variant's `.param` + `.bin` (pnnx-converted from its ONNX).

ncnn's fp16 options (storage, packed, arithmetic) are set explicitly per record: on for an fp16
variant (fp16 weights), off for the others, so fp32 is the reference; a profile's
`[runtime.ncnn] fp16 = "on" | "off"` overrides it. They are read back into `runtime_settings`,
and what computes comes from them and the device's CPU (fp16 arithmetic needs ARMv8.2). No int8:
ncnn2int8 ships in no wheel (those variants are "unavailable" records that say so).
"""

from edgebench.runtimes import OnDemand, Runtime, register

register(Runtime(
    name="ncnn",
    format="ncnn",
    distribution="ncnn",
    module="ncnn",
    install_hint="pip install ncnn (or: pip install 'edgebench[ncnn]', which adds pnnx to convert)",
    device_requirement="ncnn",
    on_demand=OnDemand(requirements=("ncnn",)),  # 5 MB: installed when a qemu profile lists it
    precision_from="runner",
    description="Tencent ncnn, CPU (fp16 options set per record and read back)",
))
