#!/bin/sh
# Build (once) the aarch64 rootfs the qemu-aarch64 target runs in; see README.md here.
# Usage: targets/qemu-aarch64/prepare.sh [--force] [--dest DIR]
# Uses the python3 on PATH (activate edgebench's venv first); works from a plain checkout too.
set -eu
repo="$(cd "$(dirname "$0")/../.." && pwd)"
PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" exec python3 -m edgebench.hosts.qemu_rootfs "$@"
