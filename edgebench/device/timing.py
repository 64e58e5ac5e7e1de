"""How the runner times calls: a steady-state loop, and two models interleaved in one process.

Staged beside `runner.py` on a device; imports only the standard library.
"""

from __future__ import annotations

import time

if __package__:
    from .runner_facts import rapl_delta_uj, read_rapl_uj
else:  # staged on a device beside runner.py
    from runner_facts import rapl_delta_uj, read_rapl_uj


def measure_latency(call, warmup: int, min_runs: int, min_seconds: float, max_seconds: float, window=None):
    """Time `call()` after `warmup` calls until both minimums are met.

    Returns (ms samples, CPU seconds, RAPL µJ or None) of the timed loop alone: warm-up is
    neither timed nor counted in CPU time or energy. A `window` dict gets the loop's
    {start, end} on the device's UTC clock.
    """
    for _ in range(warmup):
        call()
    clock = time.perf_counter_ns
    samples: list[int] = []
    append = samples.append
    rapl_before = read_rapl_uj()
    cpu0 = time.process_time()
    if window is not None:
        window["start"] = utc_now()
    start = clock()
    min_ns, max_ns = int(min_seconds * 1e9), int(max_seconds * 1e9)
    while True:
        t0 = clock()
        call()
        t1 = clock()
        append(t1 - t0)
        elapsed = t1 - start
        if (len(samples) >= min_runs and elapsed >= min_ns) or elapsed >= max_ns:
            break
    if window is not None:
        window["end"] = utc_now()
    cpu = time.process_time() - cpu0
    rapl = rapl_delta_uj(rapl_before, read_rapl_uj())
    return [s / 1e6 for s in samples], cpu, rapl


def utc_now() -> str:
    """The device's wall clock, UTC, to the microsecond (ISO 8601)."""
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")


# A/B blocks last about this long: much shorter than the phases in which neighbours load the
# machine (hundreds of ms), so a phase hits both models alike; long enough that the timer and
# the switch between sessions cost nothing measurable.
AB_BLOCK_SECONDS = 0.005


def measure_pair(call_a, call_b, warmup: int, min_runs: int, min_seconds: float, max_seconds: float,
                 window=None, usage=None):
    """Time two models in one process, alternating blocks of calls A B B A A B ...

    Returns the ms samples of A and of B. Measured on a 20-µs model against itself while the
    other core trained a network: the round-to-round sd of log(B/A) of the per-round minimum
    was 31 % with one process per model, 2.0 % with this (blocks of ~5 ms): a slow spell of the
    machine that covers one process covers a stretch of blocks of both here. A `window` dict
    gets the loop's {start, end} (UTC); a `usage` dict gets each side's CPU seconds and RAPL µJ
    of its own blocks (`cpu_s`, `rapl_uj`: [A, B]; RAPL None where the machine has none).
    """
    import statistics

    for call in (call_a, call_b):
        for _ in range(warmup):
            call()
    probe = []
    for _ in range(5):
        t0 = time.perf_counter_ns()
        call_a()
        probe.append(time.perf_counter_ns() - t0)
    block = max(1, min(100, int(AB_BLOCK_SECONDS * 1e9 / max(statistics.median(probe), 1))))
    clock, cpu_clock = time.perf_counter_ns, time.process_time
    samples: tuple[list[int], list[int]] = ([], [])
    calls = (call_a, call_b)
    cpu, rapl = [0.0, 0.0], [0, 0]
    metered = usage is not None and read_rapl_uj() is not None  # a counter read per block, only where there is one
    if window is not None:
        window["start"] = utc_now()
    start = clock()
    min_ns, max_ns = int(min_seconds * 1e9), int(max_seconds * 1e9)
    k = 0
    while True:
        for side in ((0, 1) if k % 2 == 0 else (1, 0)):
            call, append = calls[side], samples[side].append
            energy0, cpu0 = read_rapl_uj() if metered else None, cpu_clock()
            for _ in range(block):
                t0 = clock()
                call()
                append(clock() - t0)
            cpu[side] += cpu_clock() - cpu0
            if metered:
                rapl[side] += rapl_delta_uj(energy0, read_rapl_uj()) or 0
        k += 1
        elapsed = clock() - start
        if (min(map(len, samples)) >= min_runs and elapsed >= min_ns and k % 2 == 0) or elapsed >= max_ns:
            break
    if window is not None:
        window["end"] = utc_now()
    if usage is not None:
        usage.update(cpu_s=cpu, rapl_uj=rapl if metered else None)
    return [s / 1e6 for s in samples[0]], [s / 1e6 for s in samples[1]]
