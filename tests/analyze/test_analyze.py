"""Analyzer: loading records, the Pareto front, plots and the reports.

`make_record` / `write_run` build synthetic records in the exact records.jsonl format; the
gate's tests import them from here.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgebench.analyze import DIRECTIONS, load, pareto_front

VARIANTS = {  # name: (steps, size factor, latency factor, accuracy)
    "baseline": ([], 1.0, 1.0, 0.981),
    "fp16": ([{"method": "quantize", "scheme": "fp16"}], 0.5, 1.05, 0.981),
    "int8": ([{"method": "quantize", "scheme": "int8_static"}], 0.27, 0.7, 0.975),
    "pruned50": ([{"method": "prune", "kind": "structured", "ratio": 0.5}], 0.5, 0.55, 0.969),
    "pruned50-int8": ([{"method": "prune", "kind": "structured", "ratio": 0.5},
                       {"method": "quantize", "scheme": "int8_static"}], 0.14, 0.45, 0.96),
    "cluster4": ([{"method": "cluster", "bits": 4}], 1.0, 1.0, 0.972),
    "lowrank": ([{"method": "lowrank", "ratio": 0.5}], 0.6, 0.8, 0.975),
}


def make_record(variant: str = "baseline", target: str = "local", runtime: str = "onnxruntime",
                *, rng: np.random.Generator | None = None, n: int = 300, p50: float = 1.0,
                size_bytes: int = 400_000, accuracy: float = 0.98, macs: int = 2_000_000,
                steps: list | None = None, status: str = "ok", error: str | None = None,
                emulated: bool = False, sigma: float = 0.08, **fields) -> dict:
    """One record as the pipeline writes it; latency samples are lognormal around `p50`."""
    rng = rng or np.random.default_rng(0)
    samples = (p50 * rng.lognormal(0.0, sigma, n)).round(5).tolist()
    q = np.percentile(samples, [50, 90, 99])
    precision = "int8" if "int8" in variant else "fp16" if "fp16" in variant else "fp32"
    record = {
        "schema_version": 1, "run_id": "20261128T181500Z-3fa9c1", "variant": variant,
        "parent": None if variant == "baseline" else "baseline",
        "steps": steps if steps is not None else VARIANTS.get(variant, ([],))[0],
        "target": target, "runtime": runtime, "format": "onnx" if runtime == "onnxruntime" else "tflite",
        "status": status, "error": error, "emulated": emulated, "precision": precision,
        "size_bytes": size_bytes, "size_gzip_bytes": int(size_bytes * 0.9),
        "weight_bytes": int(size_bytes * 0.95), "params": 100_000, "nonzero_params": 100_000,
        "macs": macs,
        "latency_ms": {"p50": float(q[0]), "p90": float(q[1]), "p99": float(q[2]),
                       "mean": float(np.mean(samples)), "std": float(np.std(samples)),
                       "min": float(min(samples)), "max": float(max(samples)), "n": n},
        "latency_samples_ms": samples, "peak_rss_mb": 60 + size_bytes / 2**20 * 3,
        "cpu_time_s": float(np.sum(samples)) / 1000 * 1.02,
        "energy_mj": {"value": float(q[0]) * 25.0, "model": "cpu_time x active_w (25 W)"},
        "accuracy": accuracy, "agreement": 1.0 if variant == "baseline" else accuracy + 0.01,
        "logit_rel_err": 0.0 if variant == "baseline" else 0.02,
        "machine": {"arch": "aarch64" if emulated else "x86_64", "system": "Linux",
                    "cpu": "Test CPU", "runtime_version": "1.32.0", "threads": 1},
    }
    if status != "ok":
        for key in ("size_bytes", "size_gzip_bytes", "latency_ms", "latency_samples_ms",
                    "peak_rss_mb", "cpu_time_s", "energy_mj", "accuracy", "agreement"):
            record[key] = None
    record.update(fields)
    return record


def demo_records(seed: int = 0) -> list[dict]:
    """A plausible run: every variant on local ort/tflite and an emulated aarch64 target."""
    rng = np.random.default_rng(seed)
    out = []
    for target, runtime, speed, emulated in (("local", "onnxruntime", 0.08, False),
                                             ("local", "tflite", 0.11, False),
                                             ("qemu-aarch64", "onnxruntime", 55.0, True)):
        for name, (_steps, size, lat, acc) in VARIANTS.items():
            if runtime == "tflite" and name == "cluster4":
                out.append(make_record(name, target, runtime, status="error",
                                       error="ExportError: cluster palettes are not supported by litert-torch"))
                continue
            out.append(make_record(name, target, runtime, rng=rng, p50=speed * lat,
                                   size_bytes=int(420_000 * size), accuracy=acc, emulated=emulated,
                                   macs=int(2_400_000 * (0.5 if "pruned" in name else 1))))
    return out


def write_run(folder: Path, records: list[dict], manifest: bool = True) -> Path:
    """A results/<run-id>/ folder holding `records` (and a manifest)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "records.jsonl", "w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    if manifest:
        (folder / "manifest.json").write_text(json.dumps({
            "schema_version": 1, "edgebench": "0.1.0", "run_id": folder.name,
            "git": {"commit": "3fa9c1d", "dirty": True},
            "machine": {"arch": "x86_64", "system": "Linux", "cpu": "Test CPU", "cpu_count": 2},
            "experiment": {"name": "demo", "seed": 0}, "started": "2026-11-28T18:15:00Z",
            "finished": "2026-11-28T18:19:00Z"}))
    return folder


# --- load ----------------------------------------------------------------------------------

def test_load_flattens_and_keeps_samples(tmp_path):
    run = write_run(tmp_path / "run1", demo_records())
    df = load(run)
    assert len(df) == 3 * len(VARIANTS)
    for column in ("latency_ms.p50", "energy_mj.value", "machine.arch", "method", "run_dir"):
        assert column in df.columns
    assert isinstance(df.loc[0, "latency_samples_ms"], list) and len(df.loc[0, "latency_samples_ms"]) == 300
    assert set(df["method"]) == {"baseline", "quantize", "prune", "cluster", "lowrank"}
    assert df.loc[df.variant.eq("pruned50-int8"), "method"].iloc[0] == "prune"
    err = df[df.status.eq("error")]
    assert len(err) == 1 and "cluster" in err["error"].iloc[0] and np.isnan(err["latency_ms.p50"].iloc[0])
    assert df["emulated"].dtype == bool and df["emulated"].sum() == len(VARIANTS)


def test_load_several_runs_and_jsonl_paths(tmp_path):
    a = write_run(tmp_path / "a", [make_record(run_id="A")])
    b = write_run(tmp_path / "b", [make_record(run_id="B"), make_record("int8", run_id="B")])
    df = load([a, b / "records.jsonl"])
    assert df.groupby("run_id").size().to_dict() == {"A": 1, "B": 2}


def test_load_skips_a_torn_last_line_and_names_missing_runs(tmp_path):
    from edgebench.errors import EdgebenchError

    run = write_run(tmp_path / "r", [make_record()])
    with open(run / "records.jsonl", "a") as f:
        f.write('{"variant": "int8", "lat')  # a run killed mid-write
    assert len(load(run)) == 1
    with pytest.raises(EdgebenchError, match="does not exist"):
        load(tmp_path / "nope")


def test_import_does_not_pull_pandas():
    code = "import sys, edgebench.analyze, edgebench.analyze.check, edgebench.analyze.report, " \
           "edgebench.analyze.compare, edgebench.measure.energy; print('pandas' in sys.modules, 'matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# --- Pareto front --------------------------------------------------------------------------

def brute_force_front(values: np.ndarray, signs: np.ndarray) -> np.ndarray:
    cost = values * -signs
    out = []
    for i in range(len(cost)):
        dominated = any(np.all(cost[j] <= cost[i]) and np.any(cost[j] < cost[i])
                        for j in range(len(cost)) if j != i)
        out.append(not dominated and not np.isnan(values[i]).any())
    return np.array(out)


@pytest.mark.parametrize("seed", range(40))
def test_pareto_front_matches_brute_force_with_ties(seed):
    import pandas as pd

    rng = np.random.default_rng(seed)
    n, metrics = int(rng.integers(1, 40)), ["accuracy", "size_bytes", "latency_ms.p50"][: int(rng.integers(1, 4))]
    # Few distinct values, so ties and exact duplicates are common.
    values = rng.integers(0, 5, size=(n, len(metrics))).astype(float)
    if n > 3:
        values[rng.integers(0, n)] = values[rng.integers(0, n)]
        values[rng.integers(0, n), 0] = np.nan
    df = pd.DataFrame(values, columns=metrics)
    df["target"] = rng.choice(["a", "b"], n)
    df["runtime"] = "onnxruntime"
    df["status"] = np.where(rng.random(n) < 0.1, "error", "ok")
    got = pareto_front(df, metrics)
    signs = np.array([DIRECTIONS[m] for m in metrics], dtype=float)
    for _, group in df.groupby(["target", "runtime"]):
        ok = group[group.status.eq("ok")]
        expected = brute_force_front(ok[metrics].to_numpy(), signs)
        assert got[ok.index].tolist() == expected.tolist()
        assert not got[group.index[group.status.ne("ok")]].any()


def test_pareto_duplicates_and_equal_points():
    import pandas as pd

    df = pd.DataFrame({"accuracy": [0.9, 0.9, 0.8, 0.95, np.nan], "size_bytes": [10, 10, 10, 20, 1],
                       "target": "t", "runtime": "r", "status": "ok"})
    assert pareto_front(df, ["accuracy", "size_bytes"]).tolist() == [True, True, False, True, False]


def test_pareto_unknown_metric_suggests_name():
    import pandas as pd

    from edgebench.errors import EdgebenchError

    with pytest.raises(EdgebenchError, match="latency_ms.p50"):
        pareto_front(pd.DataFrame({"latency_ms.p5": [1.0]}), ["latency_ms.p5"])


# --- plots and reports ---------------------------------------------------------------------

def test_plots_written_and_not_empty(tmp_path):
    from edgebench.analyze.plots import write_plots

    df = load(write_run(tmp_path / "run", demo_records()))
    paths = write_plots(df, tmp_path / "plots")
    names = {p.stem for p in paths}
    assert names == {"accuracy_vs_size", "accuracy_vs_latency", "accuracy_vs_energy",
                     "accuracy_vs_memory", "latency_distribution"}
    for png in paths:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
        svg = png.with_suffix(".svg").read_text()
        assert "<svg" in svg
    assert "energy: estimate, no power meter" in (tmp_path / "plots/accuracy_vs_energy.svg").read_text()
    assert "(emulated)" in (tmp_path / "plots/accuracy_vs_size.svg").read_text()


def crowded_records(n: int = 20, outlier: bool = True) -> list[dict]:
    """`n` variants of every method on one panel, close in accuracy, sizes and latencies
    bunched together (several exactly equal), and optionally one broken variant at 10 %."""
    rng = np.random.default_rng(1)
    methods = ["prune", "quantize", "cluster", "distill", "lowrank", "compact"]
    out = [make_record("baseline", rng=rng, p50=0.13, size_bytes=285_000, accuracy=0.9944)]
    for i in range(1, n):
        name = f"{methods[i % len(methods)]}-variant-{i}"
        accuracy = 0.1 if outlier and i == 3 else 0.983 + 0.0028 * (i % 5)
        out.append(make_record(name, rng=rng, steps=[{"method": methods[i % len(methods)]}],
                               p50=0.05 + 0.01 * (i % 7), size_bytes=76_000 + 5_000 * (i % 4),
                               accuracy=accuracy))
    return out


def _labels(ax) -> list:
    """The point labels of a panel (notes such as "below 98.2 ↓" are placed in axes coordinates)."""
    return [t for t in ax.texts if t.get_transform() is not ax.transAxes]


@pytest.mark.parametrize("chart", ["accuracy_vs_size", "accuracy_vs_latency"])  # linear-ish; log, whiskers
def test_crowded_panel_labels_never_overlap_and_outlier_is_clipped(chart):
    import matplotlib.pyplot as plt

    from edgebench.analyze.plots import CHARTS

    df = load_records(crowded_records(20))
    fig = CHARTS.get(chart).draw(df)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    labels = _labels(ax)
    boxes = [t.get_window_extent(renderer) for t in labels]
    frame = ax.get_window_extent(renderer)
    for i, a in enumerate(boxes):
        assert frame.x0 <= a.x0 and a.x1 <= frame.x1 and frame.y0 <= a.y0 and a.y1 <= frame.y1
        for j, b in enumerate(boxes[:i]):
            assert not a.overlaps(b), (labels[i].get_text(), labels[j].get_text())
    # Every variant is identifiable: its number is in some label, and the key names it.
    shown = ", ".join(t.get_text() for t in labels)
    numbers = {int(tok) for tok in re.findall(r"(?<![\d.])(\d+)(?![\d.%])", shown)}
    assert numbers == set(range(1, 21))
    key = [t.get_text() for t in fig.legends[0].get_texts()]
    number = next(int(k.split()[0]) for k in key if k.endswith(" cluster-variant-14"))
    assert 1 < number <= 20 and "cluster" in key
    # The 10 % variant does not squash the axis: it is clipped at the bottom with its value.
    low, high = ax.get_ylim()
    assert high <= 100 and high - low < 5 and low > 95
    assert "(10%)" in shown
    plt.close(fig)


def test_few_points_are_named_directly(tmp_path):
    import matplotlib.pyplot as plt

    from edgebench.analyze.plots import CHARTS

    df = load_records([r for r in demo_records() if r["target"] == "local" and r["runtime"] == "tflite"])
    fig = CHARTS.get("accuracy_vs_size").draw(df)
    texts = {t.get_text() for t in _labels(fig.axes[0])}
    assert {"baseline", "int8", "pruned50-int8"} <= {p.strip() for t in texts for p in t.split(",")}
    assert not any(t.strip().isdigit() for t in texts)  # names, no numbers and no key
    low, high = fig.axes[0].get_ylim()
    assert high <= 100 and low > 90  # focused on the variants, never above 100 %
    plt.close(fig)


def test_variant_numbers_do_not_depend_on_row_order():
    from edgebench.analyze.chart_style import METHOD_STYLE
    from edgebench.analyze.labels import variant_numbers

    df = load_records(demo_records())
    a = variant_numbers(df, list(METHOD_STYLE))
    b = variant_numbers(df.iloc[::-1], list(METHOD_STYLE))
    assert a == b and a["baseline"] == 1 and sorted(a.values()) == list(range(1, len(VARIANTS) + 1))


def test_focus_clips_only_far_outliers():
    from edgebench.analyze.labels import focus

    low, high, cut = focus([99.4, 99.2, 98.9, 98.3, 10.0])
    assert cut is not None and 97.5 < cut < 98.3 and low < cut and high <= 100
    assert focus([99.4, 90.0, 80.0, 70.0, 60.0])[2] is None  # a real spread is shown, not clipped
    assert focus([100.0, 100.0])[1] == 100


def load_records(records: list[dict]):
    import tempfile

    folder = Path(tempfile.mkdtemp()) / "run"
    return load(write_run(folder, records))


def test_reports_self_contained_with_front_and_errors(tmp_path):
    from edgebench.analyze.report import write_reports

    run = write_run(tmp_path / "20261128T181500Z-3fa9c1", demo_records())
    paths = write_reports(run, log=lambda *a: None)
    assert {p.name for p in paths} >= {"records.csv", "report.html", "report.md"}
    html = (run / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html, re.I)
    assert html.count("data:image/png;base64,") == 5
    assert "cluster palettes are not supported" in html and "3fa9c1d" in html
    # A classifier's table is in percent with its Wilson interval and McNemar test (pandas copies
    # DataFrame.attrs, so the Quality kept there is equal to ACCURACY, not the same object), and
    # the columns a choice is made on come before the details, on a laptop's screen.
    headers = re.findall(r'<th data-col="\d+"[^>]*>([^<]*)</th>', html)
    assert headers[1:10] == ["variant", "target", "runtime", "accuracy %", "95% CI", "Δ acc pt", "p50 ms",
                             "× baseline", "size KB"], headers
    assert "McNemar" in html and "Wilson" in html and "bootstrap" not in html.split("<table")[0][-2000:]
    md = (run / "report.md").read_text()
    assert "★" in md and "plots/accuracy_vs_size.png" in md and "cluster palettes" in md
    csv = (run / "records.csv").read_text().splitlines()
    assert len(csv) == 1 + 3 * len(VARIANTS) and "on_front" in csv[0]


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="needs chromium (apt-get install chromium)")
def test_report_html_runs_in_headless_chromium_without_errors(tmp_path):
    from edgebench.analyze.report import write_reports

    run = write_run(tmp_path / "run", demo_records())
    write_reports(run, log=lambda *a: None)
    html = (run / "report.html").read_text()
    # Catch errors from every later script: a handler first in <head>, results into the DOM.
    probe = ("<script>window.__errors=[];window.onerror=function(m,s,l){__errors.push(m+' @'+l)};"
             "window.addEventListener('DOMContentLoaded',function(){setTimeout(function(){"
             "var th=document.querySelector('th[data-col]');if(th){th.click();th.click();}"
             "var d=document.createElement('pre');d.id='probe';d.textContent='ERRORS:'+"
             "JSON.stringify(__errors)+' ROWS:'+document.querySelectorAll('tbody tr').length;"
             "document.body.appendChild(d)},0)});</script>")
    page = tmp_path / "probe.html"
    page.write_text(html.replace("<head>", "<head>" + probe, 1))
    out = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=3000", "--dump-dom",
         page.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r"ERRORS:(\[.*?\]) ROWS:(\d+)", out.stdout)
    assert found, out.stderr[-2000:]
    assert json.loads(found.group(1)) == []
    assert int(found.group(2)) == 3 * len(VARIANTS)
