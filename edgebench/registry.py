"""One way to register things: methods, runtimes, hosts and charts are each a `Registry`.

A registry names the modules that fill it (its table: adding a runtime is one module and one
line there). Modules are imported on first use, not at start-up, so `edgebench --help` stays
light; a listed module that fails to import is an error, never silently skipped.

    >>> from edgebench.registry import Registry
    >>> colours = Registry("colour", modules=())
    >>> @colours.register("red")
    ... class Red: ...
    >>> colours.get("red").__name__
    'Red'
    >>> colours.get("rad")
    Traceback (most recent call last):
    ...
    edgebench.errors.ConfigError: unknown colour 'rad' (did you mean "red"?); known: red
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from edgebench.errors import ConfigError, did_you_mean


class Registry:
    """Named entries of one kind, filled by importing `modules` on first use."""

    def __init__(self, kind: str, modules: tuple[str, ...]):
        self.kind = kind
        self.modules = modules
        self._entries: dict[str, Any] = {}
        self._loaded = False
        self._loading = threading.Lock()
        self._owner: int | None = None  # the thread importing the table

    def register(self, name: str, entry: Any = None) -> Callable:
        """`registry.register("name", obj)`, or `@registry.register("name")` on a class/function."""

        def add(obj: Any) -> Any:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = obj
            return obj

        return add(entry) if entry is not None else add

    def _load(self) -> None:
        if self._loaded and not self._loading.locked() or self._owner == threading.get_ident():
            return  # loaded; or this thread is importing the table (a module looks itself up)
        with self._loading:  # another thread's lookup waits for the whole table, never a part of it
            if self._loaded:
                return
            self._owner = threading.get_ident()
            self._loaded = True  # before importing: a module may look itself up while registering
            try:
                for module in self.modules:
                    importlib.import_module(module)
            except BaseException:
                self._loaded = False  # every later lookup fails too, never answers from part of the table
                raise
            finally:
                self._owner = None

    def get(self, name: str) -> Any:
        self._load()
        if name not in self._entries:
            known = ", ".join(self.names())
            raise ConfigError(f"unknown {self.kind} {name!r}{did_you_mean(name, self.names())}; known: {known}")
        return self._entries[name]

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def items(self) -> Iterator[tuple[str, Any]]:
        self._load()
        return iter(sorted(self._entries.items()))

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load()
        return len(self._entries)


# ---- the tables that experiment files name --------------------------------------------------
# They live here, with the mechanism, so that `edgebench.config` can validate a method or runtime
# name without importing the stages that register them; each module listed imports the registry
# and registers itself when the table is first used.

# Compression methods (edgebench.compress): one module per method, each registering its step class.
METHODS = Registry("method", modules=(
    "edgebench.compress.prune",
    "edgebench.compress.quantize",
    "edgebench.compress.cluster",
    "edgebench.compress.distill",
    "edgebench.compress.lowrank",
    "edgebench.compress.compact",
    "edgebench.compress.stress",
))

# Tasks (edgebench.tasks): one module per built-in task, each registering its Task class.
TASKS = Registry("task", modules=(
    "edgebench.tasks.classify",
    "edgebench.tasks.regress",
    "edgebench.tasks.anomaly",
    "edgebench.tasks.detect",
    "edgebench.tasks.custom",
))

# Runtimes (edgebench.runtimes): one module per runtime, each registering its `Runtime`.
RUNTIMES = Registry("runtime", modules=(
    "edgebench.runtimes.onnxruntime",
    "edgebench.runtimes.tflite",
    "edgebench.runtimes.openvino",
    "edgebench.runtimes.executorch",
    "edgebench.runtimes.ncnn",
))


# ---- the user's own code, named "package.module:function" ------------------------------------


def import_user_module(module_name: str):
    """Import a user's module; the working directory counts, as with `python -m`.

    The `edgebench` console script's sys.path starts with its own bin folder, not the working
    directory, so `factory = "mynet:build"` beside the experiment would not be found otherwise.
    """
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        top = module_name.split(".")[0]
        cwd = os.getcwd()
        if exc.name != top or cwd in sys.path or "" in sys.path:
            raise
        sys.path.append(cwd)
        return importlib.import_module(module_name)


def user_function(ref: str, what: str) -> Callable:
    """The user's `"package.module:function"` (a model factory, a task's evaluate or loss), or a
    ConfigError that says what could not be found and where edgebench looked."""
    if ":" not in ref:
        raise ConfigError(f'{what} {ref!r}: expected "package.module:function"')
    module_name, fn_name = ref.split(":", 1)
    try:
        module = import_user_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"{what} {ref!r}: cannot import {module_name!r} ({exc}); edgebench imports it like Python "
            "does: from the working directory, an installed package, or a folder on PYTHONPATH"
        ) from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise ConfigError(f"{what} {ref!r}: {module_name} has no callable {fn_name!r}")
    return fn

