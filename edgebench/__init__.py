"""edgebench: which compressed variant of my model should I deploy on this device?

Compress a PyTorch model several ways, export each variant to ONNX and TFLite, run every
variant on the real runtime of each target device and compare size, latency, memory, an
energy estimate and accuracy, with the Pareto front marked.

The package is laid out in the order data flows, one package per stage, each importing only
the stages before it (tests/test_structure.py checks it):

    config/    the experiment file and the measurement settings (what the user writes)
    tasks/     what a model's outputs mean: scoring with intervals, losses, fidelity
    model/     model factories, data sets and loaders, training
    compress/  one file per compression method; layer sensitivity
    device/    the runner that runs on a device (stdlib + numpy + one runtime) and its adapters
    runtimes/  one declaration per runtime: its format, packages, precision read-back
    export/    each variant's artifacts: exporters, the export worker, ONNX graph helpers,
               the module map, precision inspectors
    hosts/     ways of reaching a device (local, qemu, ssh) and the aarch64 rootfs
    targets/   profiles; measuring and checking on a Host x Runtime
    measure/   runner rounds -> records, profiles, energy, accuracy statistics, records file
    analyze/   records -> table, Pareto front, charts, report, the regression gate
    pool/      Dask: building and measuring on a device pool
    search/    Optuna over compression chains
and at the top: cli, pipeline (the orchestrator), errors, registry, paths, progress, testing.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

__version__ = "0.1.0"
SCHEMA_VERSION = 1

# Modules that moved when the package took one folder per stage (0.1 -> 0.2). Their old names
# keep working for one release, with a DeprecationWarning naming the new one.
MOVED = {
    "edgebench.models": "edgebench.model.factories",
    "edgebench.data": "edgebench.model.data",
    "edgebench.train": "edgebench.model.train",
    "edgebench.sensitivity": "edgebench.compress.sensitivity",
    "edgebench.export_tflite": "edgebench.export.tflite",
    "edgebench.export_worker": "edgebench.export.worker",
    "edgebench.artifacts": "edgebench.export.artifacts",
    "edgebench.onnx_graph": "edgebench.export.onnx_graph",
    "edgebench.module_map": "edgebench.export.module_map",
    "edgebench.precision": "edgebench.export.precision",
    "edgebench.precision_onnx": "edgebench.export.precision_onnx",
    "edgebench.precision_tflite": "edgebench.export.precision_tflite",
    "edgebench.variants": "edgebench.export.variants",
    "edgebench.measuring": "edgebench.measure.rounds",
    "edgebench.records": "edgebench.measure.records",
    "edgebench.profiling": "edgebench.measure.profiling",
    "edgebench.energy": "edgebench.measure.energy",
    "edgebench.accuracy": "edgebench.measure.accuracy",
    "edgebench.targets.qemu_rootfs": "edgebench.hosts.qemu_rootfs",
    "edgebench.targets.qemu_cpus": "edgebench.hosts.qemu_cpus",
    "edgebench.targets.qemu_debian": "edgebench.hosts.qemu_debian",
}


def moved_warning(old: str, new: str) -> None:
    warnings.warn(f"{old} moved to {new}; the old name goes in the next release", DeprecationWarning, stacklevel=3)


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """`import edgebench.models` gives edgebench.model.factories (the same module object)."""

    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name in MOVED else None

    def create_module(self, spec):
        moved_warning(spec.name, MOVED[spec.name])
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module):  # already executed under its new name
        pass


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.append(_MovedModules())
