#!/usr/bin/env bash
# Everything the test suite needs, on a fresh Debian/Ubuntu machine: system packages, a venv
# with edgebench and its extras, and the aarch64 root filesystem the QEMU target runs in.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1

# qemu-user-static: the aarch64 target; openssh-server/client: a loopback sshd stands in for a
# Raspberry Pi; chromium: checks that report.html opens without console errors.
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends qemu-user-static openssh-server openssh-client \
  chromium debian-archive-keyring ca-certificates >/dev/null

# The CPU build of torch first, pinned: a bare `torch` requirement pulls a 5 GB CUDA build.
python3 -m venv .venv
.venv/bin/pip install -q torch==2.13.0 -e '.[tflite,openvino,executorch,ncnn,pool,search,dev]'

# The aarch64 rootfs (Python 3.11, numpy, onnxruntime, ai-edge-litert, OpenVINO), built once, cached,
# with the runtimes the qemu profiles list that it installs on first use (ncnn; ExecuTorch's
# torch-free runtime in a Python 3.13 tree): ~50 s and ~510 MB in all.
.venv/bin/edgebench targets --prepare qemu-aarch64
