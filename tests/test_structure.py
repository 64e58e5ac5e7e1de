"""The package's shape: no import cycle, no file past 400 lines, the light parts light, and
every entry of each registry (compression methods, charts) keeping its contract.

Import cycles count every `import`/`from` that names an edgebench module, at module level and
inside functions alike (a lazy import cycle is still a design cycle), relative imports
included; imports under `if TYPE_CHECKING:` do not run and do not count. A registry's table of
module names is not an import: the registered modules import the registry, and the registry
imports them by name on first use, in that one direction by design.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "edgebench"
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imported_names(tree: ast.AST, package: str, device: bool) -> set[str]:
    """Dotted names of everything `tree` imports (a `from a import b` gives a and a.b)."""
    names: set[str] = set()
    skip = {id(n) for node in ast.walk(tree) if _is_type_checking(node) for n in ast.walk(node)}
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package, one level up per extra dot
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names |= {module} | {f"{module}.{alias.name}" for alias in node.names}
    if device:
        # The runner and its adapters import each other as plain modules when staged on a
        # device (`from runner_facts import ...` when `__package__` is empty).
        siblings = {n for n in names if f"edgebench.device.{n.split('.')[0]}" in MODULES}
        names |= {f"edgebench.device.{n}" for n in siblings}
    return names


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _resolve(name: str) -> str | None:
    """The edgebench module a dotted name lives in (`edgebench.config.build` -> edgebench.config)."""
    while name.startswith("edgebench") and name not in MODULES:
        name = name.rpartition(".")[0]
    return name if name in MODULES else None


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(), str(path))
        targets = {_resolve(n) for n in _imported_names(tree, package, package == "edgebench.device")}
        graph[name] = {t for t in targets if t and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_cycle_finder_finds_a_lazy_import_cycle_and_ignores_type_checking():
    a = ast.parse("def f():\n    from edgebench.config import build\n")
    b = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from edgebench.cli import main\n")
    assert _imported_names(a, "edgebench", False) == {"edgebench.config", "edgebench.config.build"}
    assert _imported_names(b, "edgebench", False) == {"typing", "typing.TYPE_CHECKING"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycle_among_edgebench_modules():
    graph = import_graph()
    assert graph["edgebench.device.runner"] >= {"edgebench.device.runner_facts"}  # plain-name siblings
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


# The stages in the order data flows (edgebench/__init__.py, shared/DESIGN.md "Layout"): a module
# may import its own stage and the stages before it, never a later one. The base (config and the
# small top-level helpers) comes first; the orchestrators and the command line last.
STAGES = [
    ("base", ("edgebench", "edgebench.errors", "edgebench.registry", "edgebench.paths", "edgebench.progress",
              "edgebench.config")),
    ("tasks", ("edgebench.tasks",)),
    ("model", ("edgebench.model",)),
    ("compress", ("edgebench.compress",)),
    ("device", ("edgebench.device",)),
    ("runtimes", ("edgebench.runtimes",)),
    ("export", ("edgebench.export",)),
    ("hosts", ("edgebench.hosts",)),
    ("targets", ("edgebench.targets",)),
    ("measure", ("edgebench.measure",)),
    ("analyze", ("edgebench.analyze",)),
    ("pool", ("edgebench.pool",)),
    ("pipeline", ("edgebench.pipeline",)),
    ("search", ("edgebench.search",)),
    ("top", ("edgebench.testing", "edgebench.cli", "edgebench.__main__")),
]
MAX_LOOSE = 8


def stage_of(module: str) -> int:
    """The index in STAGES of the stage `module` belongs to (the longest matching prefix)."""
    best, where = -1, None
    for i, (_, prefixes) in enumerate(STAGES):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, where = len(prefix), i
    assert where is not None, f"{module} belongs to no stage: add its package to STAGES"
    return where


def test_a_stage_imports_only_the_stages_before_it():
    graph = import_graph()
    late = sorted(f"{a} ({STAGES[stage_of(a)][0]}) imports {b} ({STAGES[stage_of(b)][0]})"
                  for a, targets in graph.items() for b in targets if stage_of(b) > stage_of(a))
    assert not late, "a stage imports a later stage:\n" + "\n".join(late)


def test_the_stage_order_check_finds_a_late_import():
    graph = {"edgebench.model.train": {"edgebench.measure.records"}, "edgebench.measure.records": {"edgebench.config"}}
    late = [(a, b) for a, t in graph.items() for b in t if stage_of(b) > stage_of(a)]
    assert late == [("edgebench.model.train", "edgebench.measure.records")]


def test_the_package_root_holds_few_loose_modules_and_each_stage_says_what_it_does():
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert len(loose) <= MAX_LOOSE, f"{len(loose)} loose modules at the root: {loose}"
    packages = sorted(p.parent for p in PACKAGE.glob("*/__init__.py"))
    assert {p.name for p in packages} == {m.split(".")[1] for _, ms in STAGES[1:] for m in ms if m.count(".") == 1
                                          and (PACKAGE / m.split(".")[1]).is_dir()} | {"config"}
    for package in packages:
        doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text()))
        assert doc and len(doc.split()) >= 12, f"{package.name}/__init__.py: say what the stage takes and gives"
    # No two modules of a package whose names differ only by a suffix (measure / measuring).
    names = sorted(MODULES)
    for a in names:
        for b in names:
            if a < b and a.rpartition(".")[0] == b.rpartition(".")[0]:
                x, y = a.rpartition(".")[2], b.rpartition(".")[2]
                assert not (len(x) >= 5 and y.startswith(x) and y[len(x):] in ("ing", "s", "er", "ment")), (a, b)


def test_moved_modules_keep_their_old_names_for_a_release_with_a_warning():
    code = ("import warnings, json\nwarnings.simplefilter('always')\nseen = []\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    import edgebench.models, edgebench.data\n"
            "    from edgebench.measure import Measure\n"
            "    from edgebench.export import export_onnx\n"
            "    from edgebench.model import factories\n"
            "    print(json.dumps({'same': edgebench.models is factories, 'create': hasattr(edgebench.models, 'create_model'),"
            " 'warned': sorted({str(x.message).split()[0] for x in w if x.category is DeprecationWarning})}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=PACKAGE.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    facts = json.loads(out.stdout.strip().splitlines()[-1])
    assert facts["same"] and facts["create"]
    assert facts["warned"] == ["edgebench.data", "edgebench.export.export_onnx", "edgebench.measure.Measure",
                               "edgebench.models"]


def test_no_file_over_400_lines():
    lengths = {p.relative_to(PACKAGE.parent): len(p.read_text().splitlines()) for p in MODULES.values()}
    long = sorted(f"{p} ({n})" for p, n in lengths.items() if n > MAX_LINES)
    assert not long, f"over {MAX_LINES} lines, split along a seam: {', '.join(long)}"


# --- the light parts are light ---------------------------------------------------------------

NO_TORCH = """
import sys
sys.modules["torch"] = None  # any `import torch` now fails
import importlib, json
for name in ("edgebench.cli", "edgebench.config", "edgebench.device.runner", "edgebench.runtimes",
             "edgebench.analyze", "edgebench.analyze.check", "edgebench.analyze.compare",
             "edgebench.analyze.report", "edgebench.analyze.plots", "edgebench.targets",
             "edgebench.compress"):
    importlib.import_module(name)
from edgebench.analyze.plots import CHARTS
from edgebench.compress import METHODS
from edgebench.config import load_experiment
from edgebench.runtimes import RUNTIMES

from edgebench.analyze import describe_steps

exp = load_experiment()  # edgebench/demo.toml
assert "ratio=0.7" in describe_steps([{"method": "prune", "ratio": 0.7}])  # reads the method's defaults
print(json.dumps({"variants": len(exp.variants), "methods": METHODS.names(), "charts": CHARTS.names(),
                  "runtimes": RUNTIMES.names(), "torch": [m for m in sys.modules if m.startswith("torch")]}))
"""


def test_config_cli_runner_runtimes_analyzer_and_targets_import_without_torch():
    out = subprocess.run([sys.executable, "-c", NO_TORCH], capture_output=True, text=True, timeout=120,
                         cwd=PACKAGE.parent)
    assert out.returncode == 0, out.stderr[-3000:]
    facts = json.loads(out.stdout.strip().splitlines()[-1])
    assert facts["variants"] > 0 and facts["torch"] == ["torch"]  # only the blocked entry
    # Every registered method, chart and runtime module loaded too.
    assert {"prune", "quantize", "distill"} <= set(facts["methods"]) and facts["charts"] and facts["runtimes"]


def test_the_model_names_config_checks_are_those_edgebench_models_registers():
    from edgebench.config import BUILTIN_MODELS
    from edgebench.model.factories import MODELS

    assert set(BUILTIN_MODELS) == set(MODELS)


# --- every compression method on the tiny nets ------------------------------------------------

# Enough to exercise each method, fast: no fine-tuning where a method allows it. A method not
# listed here runs with its defaults.
FAST = {
    "prune": {"finetune_epochs": 0},
    "cluster": {"finetune_epochs": 0},
    "lowrank": {"finetune_epochs": 0, "min_params": 64},
    "distill": {"epochs": 1, "width": 1.0},  # the tiny nets take no width: their own copy
    "compact": {"epochs": 1, "width": 0.25},
}


def _method_names() -> list[str]:
    from edgebench.compress import METHODS

    return METHODS.names()


@pytest.fixture(scope="module")
def tiny():
    from tiny_nets import tiny_data

    return tiny_data(n_train=96, n_test=32)


@pytest.mark.parametrize("net", ["TinyNet", "NoBatchNormNet"])
@pytest.mark.parametrize("name", _method_names())
def test_every_method_gives_a_working_new_model_or_a_step_error(name, net, tiny):
    import tiny_nets
    import torch

    from edgebench.compress import METHODS, StepContext
    from edgebench.errors import StepError

    model = tiny_nets.trained_tiny(tiny, getattr(tiny_nets, net))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ctx = StepContext(data=tiny, train=tiny_nets.TRAIN, seed=0, teacher=model, log=lambda _: None)
    step = METHODS.get(name)(**FAST.get(name, {}))
    try:
        out = step.apply(model, ctx)
    except StepError as exc:  # a step that does not apply to this net says why
        assert str(exc).strip()
        return
    x = torch.from_numpy(tiny.x_test[:5])
    with torch.no_grad():
        logits = out.eval()(x)
    assert logits.shape == (5, tiny_nets.N_CLASSES) and torch.isfinite(logits).all()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), f"{name} edited its input model"


# --- every chart on a small run -----------------------------------------------------------------


def _record(variant: str, method: str | None, runtime: str, rng: np.random.Generator, **facts) -> dict:
    samples = (0.2 * rng.lognormal(0.0, 0.1, 40)).round(5).tolist()
    return {
        "schema_version": 1, "run_id": "run", "variant": variant, "parent": None if method is None else "baseline",
        "steps": [] if method is None else [{"method": method}], "target": "local", "runtime": runtime,
        "format": "onnx" if runtime == "onnxruntime" else "tflite", "status": "ok", "error": None,
        "emulated": False, "precision": "fp32", "compute_precision": "fp32",
        "size_bytes": facts["size"], "params": 1000, "macs": 20_000, "n_eval": 32,
        "latency_ms": {"p50": float(np.median(samples)), "n": len(samples)}, "latency_samples_ms": samples,
        "peak_rss_mb": 50.0 + facts["size"] / 1e4, "energy_mj": {"value": 5.0 * facts["size"] / 1e5},
        "accuracy": facts["accuracy"], "accuracy_ci95": [facts["accuracy"] - 0.02, facts["accuracy"] + 0.02],
        "agreement": 1.0, "machine": {"arch": "x86_64", "system": "Linux", "cpu": "Test CPU"},
    }


def test_every_chart_draws_from_a_small_run(tmp_path):
    import matplotlib.pyplot as plt

    from edgebench.analyze import load
    from edgebench.analyze.plots import CHARTS  # write_plots itself: tests/analyze/test_analyze.py

    rng = np.random.default_rng(0)
    variants = [("baseline", None, 100_000, 0.95), ("int8", "quantize", 27_000, 0.94),
                ("pruned", "prune", 50_000, 0.93), ("kd", "distill", 40_000, 0.92)]
    records = [_record(v, m, runtime, rng, size=s, accuracy=a)
               for runtime in ("onnxruntime", "tflite") for v, m, s, a in variants]
    run = tmp_path / "run"
    run.mkdir()
    (run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    df = load(run)
    ok = df[df["status"].eq("ok")]
    for name, chart in CHARTS.items():
        assert chart.name == name
        assert chart.applies(ok), f"chart {name}: the synthetic run lacks its metric; add it to _record"
        fig = chart.draw(df, "run")
        assert len([ax for ax in fig.axes if ax.get_visible()]) >= 2, name  # a panel per runtime
        plt.close(fig)


def test_a_listed_module_that_fails_to_import_is_an_error():
    from edgebench.registry import Registry

    broken = Registry("method", modules=("edgebench.errors", "edgebench.compress.no_such_method"))
    for _ in range(2):  # the second lookup too: never an answer from part of the table
        with pytest.raises(ModuleNotFoundError, match="no_such_method"):
            broken.names()


def test_the_method_table_and_its_files_agree():
    from edgebench.compress import METHODS

    listed = {m.rpartition(".")[2] for m in METHODS.modules}
    registering = {p.stem for p in (PACKAGE / "compress").glob("*.py") if "@method(" in p.read_text()}
    assert listed == registering, "a module that registers a method must be in METHODS' table"


def test_a_registry_read_by_two_threads_at_once_answers_both_from_the_whole_table(tmp_path, monkeypatch):
    """The search's parallel trials looked methods up while the table was still importing and
    got 'unknown method' from a half-filled table."""
    import threading

    from edgebench.registry import Registry

    slow = Registry("colour", modules=("eb_slow_red", "eb_blue"))
    (tmp_path / "eb_slow_red.py").write_text(
        "import time\nfrom test_structure_registry import TABLE\ntime.sleep(0.3)\nTABLE.register('red', 1)\n")
    (tmp_path / "eb_blue.py").write_text("from test_structure_registry import TABLE\nTABLE.register('blue', 2)\n")
    module = type(sys)("test_structure_registry")
    module.TABLE = slow
    monkeypatch.setitem(sys.modules, "test_structure_registry", module)
    monkeypatch.syspath_prepend(str(tmp_path))
    seen: list = []
    threads = [threading.Thread(target=lambda: seen.append(slow.names())) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [["blue", "red"], ["blue", "red"]]
