"""ExecuTorch and ncnn on an SSH "device" (a real sshd on 127.0.0.1, this machine's Python): ncnn's
`.param` and its `.bin` travel together into the device's content-addressed cache, and both
runtimes answer there as they do locally."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("executorch.exir")
pytest.importorskip("ncnn")
pytest.importorskip("pnnx")

from edgebench.config.measure_settings import Measure  # noqa: E402
from edgebench.targets import load_profile, open_target  # noqa: E402

pytestmark = pytest.mark.ssh
FAST = Measure(threads=1, warmup=2, min_runs=5, min_seconds=0.0, max_seconds=2.0, timeout_s=120)


def test_both_runtimes_answer_over_ssh_as_locally(sshd, tmp_path):
    from edgebench.device.runner import decode_outputs
    from edgebench.export.artifacts import ExportRequest
    from edgebench.export.artifacts_mobile import ncnn_artifact, pte_artifact
    from edgebench.export.onnx import export_onnx

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 4 * 4, 3)).eval()
    x = np.random.default_rng(0).standard_normal((12, 1, 6, 6)).astype(np.float32)
    np.savez(tmp_path / "inputs.npz", x=x, y=np.zeros(len(x), np.int64))
    export_onnx(model, x[:1], tmp_path / "float.onnx")
    request = ExportRequest(x, x, float_onnx=tmp_path / "float.onnx")
    files = {"executorch": tmp_path / "m.pte", "ncnn": tmp_path / "m.param"}
    for exporter, name in ((pte_artifact, "executorch"), (ncnn_artifact, "ncnn")):
        assert not exporter(model, request, files[name], print, "ssh").get("error")

    device = open_target(load_profile(sshd.write_profile(tmp_path / "pi.toml", runtimes=["executorch", "ncnn"])))
    local = open_target(load_profile("local"))
    try:
        assert device.check().runtimes == {"executorch": "1.5.1", "ncnn": local.check().runtimes["ncnn"]}
        for name, artifact in files.items():
            there = device.measure(artifact, tmp_path / "inputs.npz", name, FAST)
            assert there["status"] == "ok", there.get("error")
            here = local.measure(artifact, tmp_path / "inputs.npz", name, FAST)
            np.testing.assert_array_equal(decode_outputs(there)[0], decode_outputs(here)[0])
        assert device.uploads["files"] >= 2 + 3 + 3  # data, .pte, .param and .bin, two runner bundles
    finally:
        device.close()
        local.close()
