"""Small real models and run folders for tests and benchmarks, written without torch.

    >>> facts = onnx_cnn(Path("cnn.onnx"), convs=5, slow=2)        # ELU after the first two convs
    >>> run = write_run(Path("ref"), {"baseline": {"convs": 7}, "pruned": {"convs": 5}})

The regression gate's tests and `benchmarks/gate_noise.py` both judge run folders laid out as
the pipeline leaves them (manifest, eval.npz, variants/*/model.onnx + variant.json,
records.jsonl); this is the one place that writes such a folder.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np


def onnx_cnn(path: Path, convs: int, activation: str = "Relu", slow: int = 0, slow_activation: str = "Elu",
             side: int = 32, width: int = 16, classes: int = 10, seed: int = 0) -> dict:
    """A CNN written with onnx.helper: `convs` 3×3 convolutions of `width` channels (the first from
    one input channel), each followed by `activation` — `slow_activation` for the first `slow`
    ones — then global pooling and a linear layer. Returns its params, MACs and size.

    "Relu" fuses into the convolution in onnxruntime; "Elu" or "Softplus" is a separate pass
    with an exp: the same params and MACs (and size to a few bytes) for more time.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits, params, macs, x, c_in = [], [], 0, 0, "x", 1
    for i in range(convs):
        w = (rng.standard_normal((width, c_in, 3, 3)) * np.sqrt(2 / (9 * c_in))).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(np.zeros(width, np.float32), f"b{i}")]
        nodes += [helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node(slow_activation if i < slow else activation, [f"c{i}"], [f"a{i}"])]
        params += w.size + width
        macs += side * side * width * c_in * 9
        x, c_in = f"a{i}", width
    fc = (rng.standard_normal((width, classes)) * 0.3).astype(np.float32)
    inits += [numpy_helper.from_array(fc, "fc"), numpy_helper.from_array(np.zeros(classes, np.float32), "fcb")]
    nodes += [helper.make_node("GlobalAveragePool", [x], ["pool"]), helper.make_node("Flatten", ["pool"], ["flat"]),
              helper.make_node("Gemm", ["flat", "fc", "fcb"], ["logits"])]
    graph = helper.make_graph(
        nodes, f"cnn{convs}", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, side, side])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return {"params": int(params + fc.size + classes), "macs": int(macs + width * classes),
            "size_bytes": path.stat().st_size}


def write_run(folder: Path, models: dict[str, dict], targets: list[dict] | None = None, side: int = 32,
              classes: int = 10, versions: dict | None = None) -> Path:
    """A run folder as the pipeline leaves one: manifest (run options, target profiles, package
    versions), eval.npz, and per variant its model.onnx (`onnx_cnn(**models[name])`),
    variant.json and one ok record on local/onnxruntime with footprint, accuracy and stored
    latency statistics (3 rounds of 0.09 ms minimum)."""
    from edgebench.measure.records import package_versions
    from edgebench.targets import load_profile

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.savez(folder / "eval.npz", x=rng.standard_normal((16, 1, side, side)).astype(np.float32),
             y=rng.integers(0, classes, 16))
    manifest = {"run_id": folder.name, "versions": versions or package_versions(),
                "experiment": {"run": {"threads": 1, "warmup": 5, "timeout_s": 60}},
                "targets": targets if targets is not None else [dataclasses.asdict(load_profile("local"))]}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with open(folder / "records.jsonl", "w") as f:
        for name, spec in models.items():
            vdir = folder / "variants" / name
            vdir.mkdir(parents=True)
            facts = onnx_cnn(vdir / "model.onnx", side=side, classes=classes, **spec)
            (vdir / "variant.json").write_text(json.dumps(
                {"name": name, "artifacts": {"onnx": {"file": "model.onnx", "size_bytes": facts["size_bytes"]}}}))
            record = {"variant": name, "target": "local", "runtime": "onnxruntime", "format": "onnx", "status": "ok",
                      **facts, "accuracy": 0.5, "n_eval": 16, "latency_ms": {"p50": 0.1, "min": 0.09, "n": 300},
                      "latency_rounds": [{"n": 100, "p10": 0.095, "p25": 0.1, "p50": 0.1, "min": 0.09}] * 3,
                      "machine": {"cpu": "Test CPU", "runtime_version": manifest["versions"].get("onnxruntime"),
                                  "threads": 1}}
            f.write(json.dumps(record) + "\n")
    return folder
