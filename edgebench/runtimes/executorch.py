"""ExecuTorch (PyTorch's on-device runtime) with its XNNPACK delegate, reading the variant's `.pte`.

The `.pte` is its own format (`edgebench.export.executorch`): the variant's torch model lowered
to XNNPACK, with ops XNNPACK does not take left to ExecuTorch's portable kernels. What ran is read
back on the device from one ETDump-profiled run (XNNPACK's kernel names say fp32/fp16/int8;
portable ops are named), beside the export's delegated share. ExecuTorch's Python runtime links
libtorch: its runner adapter imports torch (the only adapter that does) — except with the
torch-free `executorch-numpy-runtime` (Python >= 3.12), which the emulated aarch64 targets use.
"""

from edgebench.runtimes import OnDemand, Runtime, register

register(Runtime(
    name="executorch",
    format="pte",
    distribution="executorch",
    module="executorch",
    install_hint="pip install executorch==1.5.1 torch (or: pip install 'edgebench[executorch]'); "
                 "torch-free on Python >= 3.12: pip install executorch-numpy-runtime",
    # A .pte runs on the ExecuTorch version that wrote it: the device gets the exporter's, and
    # torch, which its Python runtime links (on aarch64 a CPU build: see targets/rpi/README.md).
    device_requirement="executorch==1.5.1 torch",
    # PyPI's aarch64 torch 2.13 is a CUDA build whose pins do not resolve: the emulated aarch64
    # device runs ExecuTorch 1.3.1 inside executorch-numpy-runtime (measured to run 1.5.1
    # programs), which needs Python >= 3.12: a Debian trixie tree beside the bookworm rootfs.
    on_demand=OnDemand(requirements=("executorch-numpy-runtime",), python="3.13",
                       module="executorch_numpy_runtime", distribution="executorch-numpy-runtime"),
    alternative=("executorch_numpy_runtime", "executorch-numpy-runtime"),
    device_imports=("torch",),  # the official runtime's pybindings link libtorch
    precision_from="runner",
    executed_reader="edgebench.export.precision_mobile:read_executorch",
    description="PyTorch ExecuTorch with the XNNPACK delegate (adapter imports torch, or runs torch-free)",
))
