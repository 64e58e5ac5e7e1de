"""The emulated cores' identity files: what a runtime on a real board would read about its CPU.

qemu user-mode emulation gives the guest the emulated core's instructions and its AT_HWCAP
bits (chosen by `-cpu`), but /proc and /sys come from the host: an x86 `/proc/cpuinfo`
crashes onnxruntime on import, and without `/sys/devices/system/cpu/cpuN/regs/identification/
midr_el1` OpenVINO (xbyak_aarch64's CPU detection) segfaults at start ("Can't open MIDR_EL1
sysfs entry"). qemu's `-L ROOTFS` looks every absolute path up under ROOTFS first, so fake
files there answer instead, with no privileges.

The files name one core, and a rootfs is shared by every profile. So the tree itself holds
DEFAULT_CPU's files, and each core of `CPUS` gets a *view*: `ROOTFS/.cpu/<name>/`, whose
`proc` and `sys` are that core's and whose other top-level entries are symlinks into the tree.
`guest_command(..., cpu="cortex-a76")` runs with `-L` on the A76's view.

What reads them (measured here, openvino 2026.4.1, qemu 7.2, a small QDQ CNN): OpenVINO
needs a midr_el1 file to exist and takes its precision choices from AT_HWCAP: on
`-cpu cortex-a76` with the A72's MIDR and cpuinfo, fp32 still ran in f16 and int8 still ran
(acl_I8), as with the A76's files. But the MIDR must match the core: the A76's MIDR on
`-cpu cortex-a72` made the int8 model die with SIGILL (kernels chosen for a dot-product core
executed on one without it). pytorch/cpuinfo (XNNPACK, onnxruntime) takes the
micro-architecture from /proc/cpuinfo's MIDR fields and the ISA from AT_HWCAP (on a Cortex-A76
MIDR it assumes the dot-product whatever the hwcaps say). Hence one view per core, each with
its own MIDR and cpuinfo. The Features lines are the AT_HWCAP bits qemu 7.2 gives each `-cpu`
(read from /proc/self/auxv under it), so the guest reads one story: qemu's A72 has the
crypto extensions (aes pmull sha1 sha2) that a Pi 4's BCM2711 lacks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CPU_VIEWS = ".cpu"  # ROOTFS/.cpu/<cpu>: the tree as that core sees it
FAKE_CPUS = 4  # both boards imitated have four cores


@dataclass(frozen=True)
class Core:
    """One emulated core as Linux on its board describes it."""

    midr: int  # MIDR_EL1: implementer, variant, architecture, part, revision
    features: str  # /proc/cpuinfo's Features line
    board: str  # the board with this core that a profile imitates

    def field(self, shift: int, bits: int) -> int:
        return (self.midr >> shift) & ((1 << bits) - 1)

    def cpuinfo(self, name: str) -> str:
        core = (f"BogoMIPS\t: 108.00\nFeatures\t: {self.features}\n"
                f"CPU implementer\t: 0x{self.field(24, 8):02x}\nCPU architecture: 8\n"
                f"CPU variant\t: 0x{self.field(20, 4):x}\nCPU part\t: 0x{self.field(4, 12):03x}\n"
                f"CPU revision\t: {self.field(0, 4)}\n")
        cores = "\n".join(f"processor\t: {n}\n{core}" for n in range(FAKE_CPUS))
        # The Hardware line keeps the runner's machine.cpu honest about where numbers come from.
        return (f"{cores}\nHardware\t: QEMU user-mode emulation ({name} cpuinfo, the core of a "
                f"{self.board}; edgebench rootfs)\n")


# The qemu -cpu names of the cores edgebench's profiles emulate: MIDR_EL1 of the real core,
# Features = the AT_HWCAP bits qemu-aarch64 7.2 sets for that -cpu (measured: 0x8fb, 0x119ffb).
CPUS = {
    "cortex-a72": Core(0x410FD083, "fp asimd aes pmull sha1 sha2 crc32 cpuid", "Raspberry Pi 4"),
    "cortex-a76": Core(0x414FD0B1, "fp asimd aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid "
                       "asimdrdm lrcpc dcpop asimddp", "Raspberry Pi 5"),
}
DEFAULT_CPU = "cortex-a72"


def write_cpu_files(root: Path, cpu: str) -> None:
    """/proc/cpuinfo and /sys/devices/system/cpu/{possible,present,cpuN/regs/...} of `cpu`."""
    core = CPUS[cpu]
    (root / "proc").mkdir(parents=True, exist_ok=True)
    (root / "proc" / "cpuinfo").write_text(core.cpuinfo(cpu))
    sys_cpu = root / "sys/devices/system/cpu"
    sys_cpu.mkdir(parents=True, exist_ok=True)
    for name in ("possible", "present", "online"):
        (sys_cpu / name).write_text(f"0-{FAKE_CPUS - 1}\n")
    for n in range(FAKE_CPUS):
        regs = sys_cpu / f"cpu{n}" / "regs" / "identification"
        regs.mkdir(parents=True, exist_ok=True)
        (regs / "midr_el1").write_text(f"0x{core.midr:016x}\n")
        (regs / "revidr_el1").write_text(f"0x{0:016x}\n")


def make_views(rootfs: Path) -> None:
    """DEFAULT_CPU's files in the tree, and a view `.cpu/<name>` for every core of CPUS."""
    write_cpu_files(rootfs, DEFAULT_CPU)
    entries = sorted(p.name for p in rootfs.iterdir() if p.name not in ("proc", "sys", CPU_VIEWS))
    for cpu in CPUS:
        view = rootfs / CPU_VIEWS / cpu
        view.mkdir(parents=True)
        for name in entries:  # relative: the tree is renamed into place after the build
            (view / name).symlink_to(Path("../..") / name)
        write_cpu_files(view, cpu)


def qemu_root(rootfs: Path, cpu: str | None) -> Path:
    """The folder to give qemu's -L for `cpu`: its view when the tree has one, else the tree."""
    view = Path(rootfs) / CPU_VIEWS / cpu if cpu else None
    return view if view is not None and view.is_dir() else Path(rootfs)
