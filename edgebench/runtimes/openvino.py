"""OpenVINO on its CPU plugin, reading the variant's .onnx directly (fp32, fp16, QDQ int8).

What precision ran is read back by the runner from the compiled model's performance counters
(`exec_type`, e.g. `jit_avx2_FP32`, `acl_f16`, `acl_I8`): OpenVINO picks kernels per device
(an "fp32" model runs in bf16 on x86 CPUs with AVX-512 BF16 or AMX, in f16 on ARMv8.2 cores,
unless the profile's `[runtime.openvino] inference_precision = "f32"` pins it), so the graph
alone cannot say.
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
    float_default="edgebench.runtimes.openvino:float_default",
))


def float_default(arch: str, features: list[str]) -> tuple[str, str]:
    """What OpenVINO's CPU plugin computes an fp32 model in when no `inference_precision` is set:
    its default INFERENCE_PRECISION_HINT follows the CPU (checked against the plugin's own
    answer in tests/runtimes/test_openvino.py). Measured: bf16 on an AVX-512 BF16 Xeon and EPYC
    (kernels brgconv_avx512..._bf16), f16 on a Cortex-A76 under qemu (acl_f16)."""
    have = set(features)
    if arch in ("x86_64", "AMD64", "amd64"):
        bf16 = [f for f in ("avx512_bf16", "amx_bf16") if f in have]
        if bf16:
            return "bf16", f"{'/'.join(bf16)}: the CPU plugin picks bf16 for fp32 models by default"
        return "fp32", "no AVX-512 BF16 or AMX: fp32"
    if arch in ("aarch64", "arm64"):
        if "asimdhp" in have:
            return "fp16", "asimdhp (ARMv8.2 fp16 arithmetic): the CPU plugin picks f16 for fp32 models by default"
        return "fp32", "no ARMv8.2 fp16 arithmetic (asimdhp): fp32"
    return "fp32", f"{arch or 'unknown arch'}: assumed fp32"
