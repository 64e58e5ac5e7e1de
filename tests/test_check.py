"""The regression gate (`edgebench check`) and `edgebench compare`, on synthetic records."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from edgebench.analyze import check, compare
from edgebench.errors import EdgebenchError

try:
    from test_analyze import make_record, write_run
except ImportError:  # tests/ made a package
    from tests.test_analyze import make_record, write_run


def run_cli(module, argv: list[str], capsys) -> tuple[int, str]:
    """What `edgebench <cmd>` does: parse, call main, print an EdgebenchError as one line, exit 2."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--json", action="store_true")
    module.add_arguments(parser)
    try:
        code = module.main(parser.parse_args(argv))
    except EdgebenchError as exc:
        print(f"error: {exc}")
        code = exc.exit_code
    return code, capsys.readouterr().out


def two_variants(seed: int = 0, p50: float = 1.0, macs: int = 2_000_000, **fields) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [make_record("baseline", rng=rng, p50=p50, macs=macs, **fields),
            make_record("int8", rng=rng, p50=p50 * 0.7, size_bytes=110_000, accuracy=0.975,
                        macs=macs, **fields)]


@pytest.fixture
def run(tmp_path):
    return write_run(tmp_path / "run", two_variants())


def write_budget(tmp_path, text: str):
    path = tmp_path / "budget.toml"
    path.write_text(text)
    return str(path)


def test_budget_broken_names_variant_metric_limit_value(tmp_path, run, capsys):
    budget = write_budget(tmp_path, '[[budget]]\nvariant = "int8*"\ntarget = "local"\n'
                                    'max_size_bytes = 60_000\nmin_accuracy = 0.95\n')
    code, out = run_cli(check, [str(run), "--budget", budget], capsys)
    assert code == 1
    fail = [line for line in out.splitlines() if line.startswith("FAIL:")]
    assert len(fail) == 1
    assert "int8" in fail[0] and "local" in fail[0] and "size_bytes" in fail[0]
    assert "60,000" in fail[0] and "110,000" in fail[0]


def test_budget_met_passes_and_writes_markdown(tmp_path, run, capsys):
    budget = write_budget(tmp_path, '[[budget]]\nvariant = "*"\nmax_size_bytes = 500_000\n'
                                    'max_latency_p90_ms = 5.0\nmax_peak_rss_mb = 150\nmin_accuracy = 0.95\n')
    md = tmp_path / "summary.md"
    code, out = run_cli(check, [str(run), "--budget", budget, "--markdown", str(md)], capsys)
    assert code == 0, out
    assert "| int8 |" in md.read_text() and "latency_ms.p90" in md.read_text()


@pytest.mark.parametrize("text, message", [
    ('[[budget]]\nvariant = "*"\nmax_latency_p90 = 2.0\n', 'did you mean "max_latency_p90_ms"'),
    ('[[budgets]]\nvariant = "*"\n', 'did you mean "budget"'),
    ('[[budget]]\nmax_size_bytes = "big"\n', "max_size_bytes"),
    ("not toml [", "not valid TOML"),
])
def test_bad_budget_is_exit_2_with_one_line(tmp_path, run, capsys, text, message):
    code, out = run_cli(check, [str(run), "--budget", write_budget(tmp_path, text)], capsys)
    assert code == 2
    assert message in out and "Traceback" not in out and len(out.strip().splitlines()) == 1


def test_missing_inputs_are_exit_2(tmp_path, run, capsys):
    assert run_cli(check, [str(tmp_path / "nope"), "--budget", "x.toml"], capsys)[0] == 2
    assert run_cli(check, [str(run), "--budget", str(tmp_path / "missing.toml")], capsys)[0] == 2
    assert run_cli(check, [str(run), "--baseline", str(tmp_path / "missing.json")], capsys)[0] == 2
    assert run_cli(check, [str(run)], capsys)[0] == 2


def test_save_baseline_then_check_against_itself_passes(tmp_path, run, capsys):
    baseline = tmp_path / "baseline.json"
    code, _ = run_cli(check, [str(run), "--save-baseline", str(baseline)], capsys)
    assert code == 0
    doc = json.loads(baseline.read_text())
    assert doc["kind"] == "edgebench-baseline" and len(doc["entries"]) == 2
    assert len(doc["entries"][0]["latency_samples_ms"]) == 200  # compacted from 300
    code, out = run_cli(check, [str(run), "--baseline", str(baseline)], capsys)
    assert code == 0, out
    assert run_cli(check, [str(run), "--baseline", str(run)], capsys)[0] == 0


def test_new_run_same_model_other_noise_passes(tmp_path, run, capsys):
    other = write_run(tmp_path / "other", two_variants(seed=1, p50=1.03))  # +3%: noise, not a regression
    code, out = run_cli(check, [str(other), "--baseline", str(run)], capsys)
    assert code == 0, out


def test_more_macs_fails_on_footprint(tmp_path, capsys):
    base = write_run(tmp_path / "base", two_variants(macs=1_500_000))
    new = write_run(tmp_path / "new", two_variants(seed=1, macs=2_000_000))  # baseline has 25% fewer
    code, out = run_cli(check, [str(new), "--baseline", str(base)], capsys)
    assert code == 1
    assert any("macs" in line and "1,500,000" in line and "2,000,000" in line
               for line in out.splitlines() if line.startswith("FAIL:"))


def test_slower_latency_fails_but_small_shift_does_not(tmp_path, capsys):
    base = write_run(tmp_path / "base", two_variants(p50=0.9))  # baseline 10% faster
    new = write_run(tmp_path / "new", two_variants(seed=1, p50=1.0))
    code, out = run_cli(check, [str(new), "--baseline", str(base)], capsys)
    assert code == 1
    assert any("latency_ms.p50" in line for line in out.splitlines() if line.startswith("FAIL:"))
    # The same shift is significant but below a 15% minimum effect: no failure.
    assert run_cli(check, [str(new), "--baseline", str(base), "--latency-effect", "0.15"], capsys)[0] == 0


def test_latency_test_needs_both_significance_and_effect():
    rng = np.random.default_rng(3)
    base = rng.lognormal(0, 0.05, 500)
    options = check.GateOptions()
    assert check.latency_test(base, base * 1.25, options)[0]
    assert not check.latency_test(base, base * 1.05, options)[0]  # significant, too small
    wide = rng.lognormal(0, 1.5, 5)
    assert not check.latency_test(wide, wide[::-1] * 1.3, options)[0]  # big, not significant


def test_error_record_and_missing_variant_fail(tmp_path, run, capsys):
    records = two_variants(seed=1)
    records[1] = make_record("int8", status="error", error="TargetError: ssh: connection refused")
    broken = write_run(tmp_path / "broken", records)
    code, out = run_cli(check, [str(broken), "--baseline", str(run)], capsys)
    assert code == 1 and "connection refused" in out
    only_base = write_run(tmp_path / "only", two_variants(seed=1)[:1])
    code, out = run_cli(check, [str(only_base), "--baseline", str(run)], capsys)
    assert code == 1 and "not in this run" in out
    budget = write_budget(tmp_path, '[[budget]]\nvariant = "int4*"\nmax_size_bytes = 1\n')
    code, out = run_cli(check, [str(run), "--budget", budget], capsys)
    assert code == 1 and "matches no record" in out


def test_json_output(tmp_path, run, capsys):
    code, out = run_cli(check, ["--json", str(run), "--baseline", str(run)], capsys)
    doc = json.loads(out)
    assert code == 0 and doc["passed"] and {c["metric"] for c in doc["checks"]} >= {"macs", "latency_ms.p50"}


def test_compare_shows_ratios(tmp_path, capsys):
    a = write_run(tmp_path / "a", two_variants())
    b = write_run(tmp_path / "b", two_variants(seed=2, p50=2.0))
    code, out = run_cli(compare, [str(a), str(b)], capsys)
    assert code == 0
    line = next(x for x in out.splitlines() if x.startswith("baseline") and "latency_ms.p50" in x)
    assert 1.8 < float(line.split()[-1]) < 2.2
    rows = compare.compare_runs(a, b)
    assert {r["metric"] for r in rows} >= {"size_bytes", "accuracy"}
