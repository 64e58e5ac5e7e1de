"""Building variants on the pool's `cpu` workers (`--jobs N`, or a cluster's `--cpu` workers).

The baseline is trained (or loaded) once by the client; it and the data are scattered to the
workers once, and each variant is one job (edgebench.pool.jobs.build) writing into the run
folder, which every build worker must see (the local cluster does; a remote `--cpu` worker needs
the same path mounted). Variants come back as they finish; their log lines are replayed here.
"""

from __future__ import annotations

import time
from pathlib import Path


def build_with_pool(pool, exp, todo, baseline, data, run_dir: Path, formats: set[str], log) -> dict:
    from distributed import as_completed

    from edgebench.pool.jobs import build

    client = pool.builder()
    log(f"building {len(todo)} variants on {pool.cpu_workers()} pool workers")
    shared = client.scatter([exp, baseline.state_dict(), data], broadcast=True)
    futures = {client.submit(build, shared[0], variant, shared[1], shared[2], str(Path(run_dir).resolve()), formats,
                             resources={"cpu": 1}, pure=False, key=f"build-{variant.name}-{time.time_ns()}"): variant
               for variant in todo}
    built = {}
    for count, fut in enumerate(as_completed(futures), 1):
        variant = futures[fut]
        try:
            made, lines = fut.result()
        except Exception as exc:  # noqa: BLE001 - a lost build is this variant's error record
            from edgebench.export.variants import BuiltVariant, _write_info

            vdir = Path(run_dir) / "variants" / variant.name
            vdir.mkdir(parents=True, exist_ok=True)
            info = {"name": variant.name, "error": f"build job lost: {type(exc).__name__}: {exc}", "artifacts": {}}
            _write_info(vdir, info)
            made, lines = BuiltVariant(variant.name, vdir, info), []
        for line in lines:
            log(f"  {line}")
        log(f"variant {count}/{len(todo)} built: {variant.name}" + (f" ({made.error})" if made.error else ""))
        built[variant.name] = made
    return built
