"""The export stage: each variant's deployable artifacts, verified against torch.

Takes a variant's nn.Module (from compress) and the calibration data; gives one artifact per
Format its runtimes read (`.onnx` for onnxruntime and OpenVINO, `.tflite` for LiteRT), each
checked against torch, its precision read back from the graph, and a module map (graph node ->
the user's module). `variants` builds a variant end to end (steps, then artifacts); `onnx` and
`tflite` export; `artifacts` is each format's exporter behind one signature; `worker` runs slow
exports in a second process; `onnx_graph`, `module_map` and `precision*` read exported graphs.
"""

from edgebench import moved_warning

# Before the stage packages, `edgebench.export` was the ONNX module: its names still work here.
_OLD_NAMES = ("export_onnx", "quantize_onnx", "verify_onnx", "onnx_costs", "onnx_macs", "artifact_sizes",
              "onnx_logits", "rel_err")


def __getattr__(name: str):
    if name in _OLD_NAMES:
        moved_warning(f"edgebench.export.{name}", f"edgebench.export.onnx.{name}")
        from edgebench.export import onnx

        return getattr(onnx, name)
    raise AttributeError(f"module 'edgebench.export' has no attribute {name!r}")
