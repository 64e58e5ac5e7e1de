"""Target profiles: the tables ([host], [measure], [power], [runtime.<name>]), the older flat
form, the errors a user meets, and the round trip through a run's manifest."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from edgebench.config.measure_settings import Measure
from edgebench.errors import ConfigError
from edgebench.targets import list_profiles, load_profile, profile_from_table

PI = """name = "pi"
runtimes = ["onnxruntime", "openvino"]

[host]
transport = "ssh"
host = "pi.example"
port = 2222

[measure]
threads = 4
run_timeout = 1
"""


@pytest.mark.parametrize("name", sorted(list_profiles()))
def test_every_shipped_profile_loads_in_tables(name):
    profile = load_profile(name)
    assert profile.transport == profile.host.transport
    Measure().for_target(profile)  # its overrides are valid measurement settings
    text = Path(profile.path).read_text()
    assert "\n[host]\n" in text and "\ntransport" not in text.split("[host]")[0]  # no flat keys left


def test_the_flat_form_loads_as_the_same_profile(tmp_path):
    flat = tmp_path / "old.toml"
    flat.write_text('name = "pi"\ntransport = "ssh"\nhost = "pi.example"\nport = 2222\nthreads = 4\n'
                    'run_timeout_s = 60\ncpu = "cortex-a72"\n')  # fmt: skip  (cpu: a qemu key, ignored as before)
    new = tmp_path / "new.toml"
    new.write_text(PI.replace("run_timeout = 1", "timeout_s = 60").replace(', "openvino"', ""))
    old, now = load_profile(flat), load_profile(new)
    assert dataclasses.replace(old, path=None, runtimes=()) == dataclasses.replace(now, path=None, runtimes=())
    assert old.measure == {"threads": 4, "timeout_s": 60.0}


def test_a_wrong_measure_key_names_the_nearest(tmp_path):
    path = tmp_path / "pi.toml"
    path.write_text(PI)
    with pytest.raises(ConfigError, match=r"\[measure\]: unknown key 'run_timeout' \(did you mean \"timeout_s\"\?\)"):
        load_profile(path)


def test_a_flat_key_beside_the_tables_says_which_table(tmp_path):
    path = tmp_path / "pi.toml"
    path.write_text('threads = 4\n' + PI.replace("run_timeout = 1\n", ""))
    with pytest.raises(ConfigError, match=r"'threads' belongs in the \[measure\] table"):
        load_profile(path)


def test_an_unknown_transport_names_the_hosts(tmp_path):
    path = tmp_path / "pi.toml"
    path.write_text(PI.replace('transport = "ssh"', 'transport = "shh"').replace("run_timeout = 1\n", ""))
    with pytest.raises(ConfigError, match=r"unknown host 'shh' \(did you mean \"ssh\"\?\)"):
        load_profile(path)


def test_runtime_options_reach_the_runner_for_that_runtime_only(tmp_path):
    path = tmp_path / "pi.toml"
    path.write_text(PI.replace("run_timeout = 1\n", "") + '\n[runtime.openvino]\ninference_precision = "f32"\n'
                    "cache = false\n")  # fmt: skip
    profile = load_profile(path)
    assert profile.runtime_options("openvino") == ["--runtime-option", "inference_precision=f32",
                                                   "--runtime-option", "cache=false"]  # fmt: skip
    assert profile.runtime_options("onnxruntime") == []
    path.write_text(PI.replace("run_timeout = 1\n", "") + "\n[runtime.openvion]\nx = 1\n")
    with pytest.raises(ConfigError, match="did you mean \"openvino\""):
        load_profile(path)


def test_a_manifests_copy_of_a_profile_rebuilds_it(tmp_path):
    for name in list_profiles():
        profile = load_profile(name)
        ignored: list[str] = []
        assert profile_from_table(dataclasses.asdict(profile), "manifest", ignored) == profile
        assert ignored == []
    # A manifest written before the tables (every key flat, None for unset ones) still rebuilds.
    old = {"name": "rpi", "transport": "ssh", "host": "pi.example", "user": None, "rootfs": None,
           "threads": None, "run_timeout_s": 120.0, "cool_timeout_s": 120.0, "power": {"active_w": 6.4}}
    rebuilt = profile_from_table(old, "manifest", [])
    assert rebuilt.host.host == "pi.example" and rebuilt.measure == {"timeout_s": 120.0}
