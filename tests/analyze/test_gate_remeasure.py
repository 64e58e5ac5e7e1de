"""A/B mode of `edgebench check`: both runs' real artifacts measured again with the real runner.

Functional tests with large margins (a model doing ~5x the work), not timing assertions: the
false-alarm and detection rates at the 10 % effect are measured by benchmarks/gate_noise.py.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from edgebench import cli, testing
from edgebench.targets import load_profile


def write_run(folder: Path, models: dict[str, tuple[int, str]], targets: list[dict] | None = None) -> Path:
    """A run folder of small CNNs: {variant: (convolutions, activation)}."""
    return testing.write_run(folder, {name: {"convs": convs, "activation": activation, "width": 8}
                                      for name, (convs, activation) in models.items()}, targets, side=16,
                             versions={"onnx": "1.23.2", "onnxruntime": "1.32.0", "torch": "2.13.0"})


MODELS = {"baseline": (4, "Relu"), "small": (2, "Relu")}
FAST_AB = ["--min-rounds", "4", "--max-rounds", "6", "--process-seconds", "0.05"]


def check(argv: list[str], capsys) -> tuple[int, dict]:
    """`edgebench --json check ...` in this process; its exit status and JSON document."""
    code = cli.main(["--json", "check", *argv])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip().startswith("{") else {"raw": out}


def latency_rows(doc: dict) -> dict[str, dict]:
    return {c["variant"]: c for c in doc["checks"] if c["metric"].startswith("latency_ms.")}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    return write_run(tmp_path_factory.mktemp("ab") / "reference", MODELS)


def test_a_whole_model_slowdown_at_equal_footprint_fails_by_latency(reference, tmp_path, capsys):
    # Softplus instead of Relu in every layer of the model and its variant: params, MACs and
    # (to 0.5 %) size unchanged, ~5x the time. The old relative rule could not see this.
    slow = write_run(tmp_path / "slow", {name: (blocks, "Softplus") for name, (blocks, _) in MODELS.items()})
    code, doc = check([str(slow), "--baseline", str(reference), *FAST_AB], capsys)
    assert code == 1, doc
    assert doc["mode"].startswith("mode: A/B — 2 pair(s)"), doc["mode"]
    rows = latency_rows(doc)
    assert {v: r["verdict"] for v, r in rows.items()} == {"baseline": "FAIL", "small": "FAIL"}
    assert all(r["limit"].startswith("reference ") and "A/B" in r["detail"] for r in rows.values())
    footprint = [c for c in doc["checks"] if c["metric"] in ("params", "macs", "size_bytes")]
    assert footprint and all(c["verdict"] == "ok" for c in footprint)


def test_identical_artifacts_pass_without_measuring(reference, tmp_path, capsys):
    same = tmp_path / "same"
    shutil.copytree(reference, same)
    code, doc = check([str(same), "--baseline", str(reference)], capsys)
    assert code == 0, doc
    assert doc["mode"].startswith("mode: A/B — every artifact is identical to the reference's (2)"), doc["mode"]
    assert all("identical artifact" in r["detail"] for r in latency_rows(doc).values())


def test_the_same_model_measured_anyway_passes_and_unknown_profile_keys_are_ignored(reference, tmp_path, capsys):
    # A manifest from a newer edgebench whose profiles carry keys this one does not know yet.
    profile = dataclasses.asdict(load_profile("local"))
    profile["from_the_future_c"] = 70.0
    profile["power"]["future_scope"] = "package"
    same = write_run(tmp_path / "same", MODELS, targets=[profile])
    code, doc = check([str(same), "--baseline", str(reference), "--measure-identical", *FAST_AB], capsys)
    assert code == 0, doc
    assert doc["mode"].startswith("mode: A/B — 2 pair(s)")
    assert any("from_the_future_c" in n and "future_scope" in n for n in doc["notes"]), doc["notes"]
    assert all(r["verdict"] in ("ok", "better") for r in latency_rows(doc).values()), latency_rows(doc)


def test_stored_mode_when_asked_or_when_there_are_no_artifacts(reference, tmp_path, capsys):
    slow = write_run(tmp_path / "slow", {name: (blocks, "Softplus") for name, (blocks, _) in MODELS.items()})
    code, doc = check([str(slow), "--baseline", str(reference), "--no-remeasure"], capsys)
    assert doc["mode"] == "mode: stored samples — --no-remeasure — 2 record(s) compared"
    assert code == 0  # the stored records say the same latency: stored mode cannot see it
    saved = tmp_path / "main.json"
    assert cli.main(["--json", "check", str(reference), "--save-baseline", str(saved)]) == 0
    capsys.readouterr()
    code, doc = check([str(slow), "--baseline", str(saved)], capsys)
    assert doc["mode"].startswith("mode: stored samples — the baseline is a saved JSON")
    shutil.rmtree(slow / "variants" / "small")
    code, doc = check([str(slow), "--baseline", str(reference), *FAST_AB], capsys)
    assert doc["mode"].startswith("mode: A/B — 1 pair(s)") and "1 on stored samples" in doc["mode"]
    assert latency_rows(doc)["baseline"]["verdict"] == "FAIL"
    assert "artifact" in latency_rows(doc)["small"]["detail"]


def test_an_unreachable_target_falls_back_to_stored_samples_and_says_why(reference, tmp_path, capsys):
    gone = {**dataclasses.asdict(load_profile("local")), "name": "local",
            "host": {"transport": "ssh", "host": "127.0.0.1", "port": 9, "connect_timeout_s": 2.0}}
    run = write_run(tmp_path / "gone", {"baseline": (4, "Softplus")}, targets=[gone])
    code, doc = check([str(run), "--baseline", str(reference)], capsys)
    assert doc["mode"].startswith("mode: stored samples — target local unreachable now"), doc["mode"]
    assert "missing" in json.dumps(doc)  # 'small' is in the reference, not in this run: fails
    assert code == 1


def test_an_artifact_that_fails_to_run_here_fails_and_a_broken_reference_falls_back(reference, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(reference, broken)
    (broken / "variants" / "small" / "model.onnx").write_bytes(b"not an onnx model")
    code, doc = check([str(broken), "--baseline", str(reference), *FAST_AB], capsys)
    assert code == 1
    row = latency_rows(doc)["small"]
    assert row["verdict"] == "FAIL" and "this run's artifact failed to run here" in row["detail"]
    code, doc = check([str(reference), "--baseline", str(broken), *FAST_AB], capsys)
    assert "1 on stored samples (the reference artifact failed to run here" in doc["mode"], doc["mode"]
    assert latency_rows(doc)["small"]["verdict"] == "ok"  # the stored statistics are the same
