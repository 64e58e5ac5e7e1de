"""Measuring and checking a target, written once on top of its Host.

Every target runs the same runner bundle (`edgebench.runtimes.runner_files`): it is staged with
the artifact and the data, started with the profile's measurement settings and runtime
options, and its JSON document is read back; hosts differ only in how files travel and how a
process starts.

    >>> target = Target(load_profile("local"))
    >>> result = target.measure(Path("model.onnx"), Path("inputs.npz"), "onnxruntime", Measure())
    >>> result["status"], result["latency_samples_ms"][:3]
    >>> target.check().runtimes
    {'onnxruntime': '1.22.0', 'tflite': '2.3.0', 'openvino': None}
    >>> target.close()
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edgebench.config.measure_settings import Measure
from edgebench.errors import TargetError
from edgebench.hosts import Completed, Host, open_host, thread_env
from edgebench.runtimes import runner_files
from edgebench.runtimes import runtime as runtime_of
from edgebench.targets.profile import TargetProfile

EXIT_UNAVAILABLE = 3  # the runner's exit status for a runtime it cannot import or use here
EMULATED_RSS_NOTE = "includes the qemu emulator (user-mode); not a device's RSS"


@dataclass
class TargetStatus:
    """What `edgebench targets` shows: reachable now, runtimes and versions, why not."""

    name: str
    transport: str
    reachable: bool
    runtimes: dict = field(default_factory=dict)  # runtime -> version, or None if missing
    problems: list = field(default_factory=list)  # "what is wrong: what to do"
    machine: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)  # facts worth knowing, not problems (e.g. bf16 by default)


class Target:
    """A profile's host, measured on with the runner, checked with a probe."""

    def __init__(self, profile: TargetProfile, host: Host | None = None):
        self.profile = profile
        self.host = host or open_host(profile.host, where=profile.path or f"the {profile.name!r} profile")
        self._last_run_end: float | None = None
        self._place = f" {self.host.place}" if self.host.place else ""  # " on 127.0.0.1", for messages

    def needs_prepare(self) -> bool:
        """True when the host has a one-time preparation still to do for this profile's runtimes
        (the qemu rootfs, a runtime it installs on first use)."""
        return self.host.needs_prepare(self.profile.runtimes)

    def prepare(self, log: Callable[[str], None] = print, force: bool = False):
        return self.host.prepare(log=log, force=force, runtimes=self.profile.runtimes)

    @property
    def uploads(self) -> dict:
        """Files and bytes sent to the device so far (hosts that copy nothing: zeros)."""
        return getattr(self.host, "uploads", {"files": 0, "bytes": 0})

    # ---- measuring ----------------------------------------------------------------------

    def measure(self, artifact: Path, data: Path, runtime: str, options: Measure,
                compare: tuple[Path, Path] | None = None, extra_args: Sequence[str] = ()) -> dict:  # fmt: skip
        """Run the runner on `artifact`; its JSON document, or {"status": "error", "error": ...}.

        `compare` = (artifact, data) is timed interleaved with it in the same process (A/B).
        `extra_args` go last on the runner's command line (e.g. `--profile-runs 50`)."""
        problem = self.host.unavailable()
        if problem:
            return self._labelled({"status": "error", "error": f"unavailable: {problem}"})
        try:
            runner = self.host.stage_bundle(runner_files(runtime))[0]
            sides = runtime_of(runtime).artifact_format.side_files
            if not sides:
                model, inputs, *other = self.host.stage([Path(artifact), Path(data), *map(Path, compare or ())])
            else:  # an artifact of several files (ncnn: .param + .bin) travels as one folder
                models = [self.host.stage_bundle([Path(a), *(Path(a).with_suffix(s) for s in sides)])[0]
                          for a in (artifact, *(compare or ())[:1])]
                inputs, *other = self.host.stage([Path(data), *map(Path, (compare or ())[1:])])
                model, other = models[0], [*models[1:], *other]
        except TargetError as exc:  # the device did not take the files: `host_error` (a pool retires it)
            return self._labelled({"status": "error", "error": str(exc), "host_error": True})
        argv = [self.host.python_for(runtime), runner, "--model", model, "--data", inputs, "--runtime", runtime,
                *options.runner_args(), *self.profile.runtime_options(runtime),
                *(["--compare-model", other[0], "--compare-data", other[1]] if other else []), *extra_args]  # fmt: skip
        self._cool_down(options.cooldown_s)
        done = self.host.run(argv, thread_env(options.threads), options.timeout_s, cpus=options.taskset)
        self._last_run_end = time.monotonic()
        return self._labelled(self._result(done, runtime, options))

    def _cool_down(self, seconds: float) -> None:
        # Pis throttle when hot: keep `seconds` between the end of one run and the next start.
        if seconds and self._last_run_end is not None:
            wait = seconds - (time.monotonic() - self._last_run_end)
            if wait > 0:
                time.sleep(wait)

    def _result(self, done: Completed, runtime: str, options: Measure) -> dict:
        result = parse_runner_output(done.stdout, done.returncode, done.stderr)
        place = self._place
        if result.get("status") == "ok":
            return self._checked(result, done)
        if not done.stdout.strip():
            problem = self.host.explain(done)
            if problem:
                return {"status": "error", "error": problem, "host_error": True}
            if done.timed_out:
                return {"status": "error", "error": f"runner timed out after {options.timeout_s:g} s{place}"}
        error, rt = str(result.get("error", "")), runtime_of(runtime)
        if "numpy is not installed" in error or "No module named 'numpy'" in error:
            hint = self.host.install_hint(["numpy", rt.device_requirement])
            result["error"] = f"numpy missing for {self.host.python}{place}: {hint}"
        elif done.returncode == EXIT_UNAVAILABLE and error.startswith("unavailable") and place and (
                "not installed" in error or "no adapter" in error):  # not "cannot run this model on this CPU"
            hint = self.host.install_hint([rt.device_requirement], rt.install_hint)
            result["error"] = f"{error}{place}: runtime missing on the device; {hint}"
        return result

    def _checked(self, result: dict, done: Completed) -> dict:
        arch = result.get("machine", {}).get("arch")
        if self.host.arch and arch != self.host.arch:
            # The runner reports its own platform.machine(): anything else means it did not run
            # where it should (under emulation), and its numbers must not pass for that machine's.
            return {"status": "error", "error": f"runner reported arch {arch!r}, not {self.host.arch}",
                    "machine": result.get("machine", {})}  # fmt: skip
        # Peak memory is the runner's own VmHWM; the host's figure only where the runner has none.
        if result.get("peak_rss_mb") is None and done.peak_rss_mb is not None:
            result["peak_rss_mb"] = done.peak_rss_mb
        if self.profile.emulated:
            # Under qemu-user the VmHWM is the guest's memory plus the emulator and its
            # translated code (native runner ~74 MB, emulated ~98-176 MB): an upper bound.
            result["peak_rss_note"] = EMULATED_RSS_NOTE
        return result

    def _labelled(self, result: dict) -> dict:
        if self.profile.emulated:
            result["emulated"] = True
        return result

    # ---- checking -----------------------------------------------------------------------

    def check(self) -> TargetStatus:
        """Is the target usable now, and with which runtimes? Problems say what to do."""
        status = TargetStatus(self.profile.name, self.profile.transport, reachable=False)
        status.runtimes = dict.fromkeys(self.profile.runtimes)
        problem = self.host.unavailable()
        if problem:
            status.problems.append(problem)
            return status
        wanted = {"numpy": ("numpy", "numpy")} | {
            name: (runtime_of(name).module, runtime_of(name).distribution) for name in self.profile.runtimes}
        # A runtime another package also provides there (ExecuTorch: executorch-numpy-runtime).
        wanted |= {f"{name}|alternative": runtime_of(name).alternative for name in self.profile.runtimes
                   if runtime_of(name).alternative}
        try:
            facts = self.host.probe(wanted)
        except TargetError as exc:
            status.problems.append(str(exc))
            return status
        for key in [k for k in wanted if k.endswith("|alternative")]:
            name, found = key.partition("|")[0], (facts.get("versions") or {}).pop(key, None)
            (facts.get("errors") or {}).pop(key, None)
            if found and facts["versions"].get(name) is None:
                facts["versions"][name] = f"{found} ({wanted[key][1]})"
                facts["errors"].pop(name, None)
        status.machine = facts["machine"]
        arch = status.machine.get("arch")
        status.reachable = not self.host.arch or arch == self.host.arch
        if not status.reachable:
            status.problems.append(f"the machine reports arch {arch!r}, not {self.host.arch}")
        status.problems += facts.get("problems", [])
        if facts["versions"] is not None:
            self._runtime_problems(status, facts)
        status.notes += self._precision_notes(status.machine)
        if self.profile.measure.get("taskset") and not facts.get("tools", {}).get("taskset", True):
            status.problems.append(f"taskset is not installed{self._place}: "
                                   "install util-linux there, or remove taskset from [measure]")  # fmt: skip
        return status

    def _runtime_problems(self, status: TargetStatus, facts: dict) -> None:
        versions, place = facts["versions"], self._place
        if status.machine.get("arch") in ("armv6l", "armv7l"):
            status.problems.append(f"the device runs a 32-bit OS ({status.machine['arch']}): onnxruntime "
                                   "and ai-edge-litert ship no 32-bit ARM wheels; install a 64-bit OS")  # fmt: skip
        if versions.get("numpy") is None:
            status.problems.append(f"numpy is not installed for {self.host.python}{place}: "
                                   f"{self.host.install_hint(['numpy'])}")  # fmt: skip
        for name in self.profile.runtimes:
            status.runtimes[name] = versions.get(name)
            if status.runtimes[name] is None:
                rt = runtime_of(name)
                why = facts["errors"].get(name, "unknown runtime").splitlines()[0][:200]
                status.problems.append(f"{name} is not usable{place} ({why}): "
                                       f"{self.host.install_hint([rt.device_requirement], rt.install_hint)}")

    def _precision_notes(self, machine: dict) -> list[str]:
        """Runtimes that compute an fp32 model in another precision on this CPU, unless pinned."""
        notes = []
        for name in self.profile.runtimes:
            pinned = (self.profile.runtime.get(name) or {}).get("inference_precision")
            precision, why = runtime_of(name).fp32_runs_as(machine.get("arch"), machine.get("cpu_features"))
            if precision != "fp32":
                how = (f"pinned here to inference_precision = {pinned!r}" if pinned else
                       f'pin fp32 with [runtime.{name}] inference_precision = "f32" in the profile')
                notes.append(f"{name}: fp32 models run in {precision} by default on this CPU ({why}); {how}")
        return notes

    def close(self) -> None:
        self.host.close()


def parse_runner_output(stdout: str, returncode: int, stderr: str = "") -> dict:
    """The runner's JSON document, or an error dict that says what went wrong."""
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                break
    tail = " | ".join(stderr.strip().splitlines()[-3:])
    how = f"killed by signal {-returncode}" if returncode < 0 else f"exit status {returncode}"
    return {"status": "error", "error": f"runner failed ({how}) with no result: {tail or 'no output'}"}
