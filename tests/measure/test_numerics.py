"""Explanations where a runtime cannot expose its tensors, and the flat rows scripts read."""

from __future__ import annotations

import json

from edgebench.measure.numerics import explain_on, json_rows, load_explanations

MAPPING = {"nodes": {"node_Conv_1": "features.0", "node_relu": "features.1", "node_linear": "head"},
           "anchors": {"node_relu": "node_Conv_1"}, "tensors": {"logits": "node_linear"},
           "modules": {"features.0": {"macs": 10, "ops": ["Conv"]}, "features.1": {"macs": 0, "ops": ["Relu"]},
                       "head": {"macs": 5, "ops": ["Gemm"]}}}


def _run(tmp_path, variant: str, artifact: str):
    vdir = tmp_path / "variants" / variant
    vdir.mkdir(parents=True)
    (vdir / "modules.json").write_text(json.dumps(MAPPING))
    (vdir / "variant.json").write_text(json.dumps({"export_scheme": "int8_static", "output_names": ["logits"]}))
    (vdir / artifact).write_bytes(b"not read")
    return tmp_path


def test_a_runtime_that_cannot_expose_tensors_answers_rows_that_say_so(tmp_path):
    run = _run(tmp_path, "int8", "model.pte")
    record = {"variant": "int8", "target": "local", "runtime": "executorch", "compute_precision": "int8"}
    doc = explain_on(None, None, run, record, reference={"status": "ok"})  # no target is needed to say so
    assert doc["status"] == "ok" and doc["exposed"] is False and "XNNPACK" in doc["note"]
    rows = json_rows(doc)
    assert [r["module"] for r in rows] == ["features.0", "head"]  # the ReLU is in its Conv's unit
    assert all(r["exposed"] is False and r["sqnr_db"] is None and "debug buffer" in r["note"] for r in rows)
    assert load_explanations(run) == [doc]


def test_a_variant_that_cannot_be_explained_is_one_error_row(tmp_path):
    run = _run(tmp_path, "int8", "model.onnx")
    (run / "variants" / "int8" / "model.onnx").unlink()
    doc = explain_on(None, None, run, {"variant": "int8", "target": "local", "runtime": "onnxruntime"}, {"status": "ok"})
    (row,) = json_rows(doc)
    assert row["status"] == "error" and row["module"] is None and "no artifact" in row["error"]
