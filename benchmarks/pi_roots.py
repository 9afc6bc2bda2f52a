"""The root filesystems of ``make pi-check``: Debian bookworm for arm64 and
armhf built with debootstrap, entered with chroot under qemu, and the
wheel installed there with pip as a Pi user would (see
:mod:`benchmarks.pi_check` for the emulation settings and why)."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from happysad.edge.errors import HappysadError

#: Per architecture: qemu's binfmt handler, the CPU it emulates, the
#: extra installed (no onnxruntime wheel exists for armv7l).
ARCHES = {
    "arm64": {"qemu": "qemu-aarch64", "cpu": "cortex-a72", "extra": "edge-onnx"},
    # armhf runs another stack: tflite-runtime 2.14 (TFLite's built-in int8
    # kernels, no XNNPACK) and Debian's OpenCV 4.6 (no YuNet). So it is
    # compared with tflite-runtime 2.14 on this machine (benchmarks.
    # pi_reference: LiteRT's XNNPACK rounds int8 otherwise, up to 0.04) on
    # the same detector, BlazeFace full range. Measured on 300 faces: the
    # pixels are identical and TFLite's reference kernels (BUILTIN_REF)
    # give bit-identical outputs on both machines, but on ARMv7 the
    # built-in kernels take NEON code paths that round requantization
    # otherwise than x86's (which match the reference): 69 of 300 faces
    # moved, by at most 6 output steps of 1/256. Hence whole faces within
    # 8 steps; photos (OpenCV 4.6's float math in the crop) within 0.05.
    "armhf": {
        "qemu": "qemu-arm",
        "cpu": "cortex-a15",
        "extra": "edge",
        "apt": ("numpy", "opencv-python-headless"),
        "detector": "blazeface-full",
        "interpreter": "tflite-runtime",
        "tolerance": {"face": 8 / 256, "photo": 0.05},
    },
}
#: Debian's packages in the root: Python 3.11 and venv, as on Raspberry Pi OS bookworm.
INCLUDE = "python3,python3-venv,ca-certificates"
MIRROR = "http://deb.debian.org/debian"
#: A Raspberry Pi 4's /proc/cpuinfo (four Cortex-A72, part 0xd08), two cores shown.
PI4_CPUINFO = (
    "".join(
        f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
        "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n"
        for i in range(2)
    )
    + "Hardware\t: BCM2835\nRevision\t: c03111\nModel\t\t: Raspberry Pi 4 Model B Rev 1.1\n"
)


def run_cmd(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def check_ok(res: subprocess.CompletedProcess, what: str, ok=(0,)) -> subprocess.CompletedProcess:
    """``res`` when its exit status is one of ``ok``.

    Raises:
        HappysadError: one line, ``what`` failed and the command's last line of output.
    """
    if res.returncode not in ok:
        lines = (res.stderr or res.stdout).strip().splitlines()
        raise HappysadError(f"pi-check: {what} failed: {(lines[-1] if lines else '')[:200]}")
    return res


def ensure_host() -> None:
    """Root on x86_64 Linux with debootstrap, qemu-user-static and binfmt_misc ready.

    Raises:
        HappysadError: not root, another machine, or the tools cannot be installed.
    """
    if platform.machine() != "x86_64" or not sys.platform.startswith("linux"):
        raise HappysadError(f"pi-check runs on x86_64 Linux, not {platform.machine()} {sys.platform}")
    if os.geteuid() != 0:
        raise HappysadError("pi-check needs root (debootstrap, chroot, mount): run it with sudo")
    if not shutil.which("debootstrap") or not shutil.which("qemu-aarch64-static"):
        print("pi-check: installing debootstrap, qemu-user-static, binfmt-support", file=sys.stderr)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run_cmd(["apt-get", "update", "-q"], env=env)
        res = run_cmd(["apt-get", "install", "-y", "-q", "debootstrap", "qemu-user-static", "binfmt-support"], env=env)
        if res.returncode:
            raise HappysadError(
                "pi-check: apt-get could not install debootstrap and qemu-user-static: " + res.stderr[-200:]
            )
    binfmt = Path("/proc/sys/fs/binfmt_misc")
    if not (binfmt / "status").exists():
        run_cmd(["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt)])
    for arch in ARCHES.values():
        if not (binfmt / arch["qemu"]).exists():
            run_cmd(["update-binfmts", "--enable", arch["qemu"]])
        if not (binfmt / arch["qemu"]).exists():
            raise HappysadError(f"pi-check: no binfmt handler for {arch['qemu']}; is qemu-user-static installed?")


def ensure_rootfs(arch: str, cache: Path) -> Path:
    """The cached root filesystem of ``arch``, built with debootstrap when
    missing (about 3 to 8 minutes), under a temporary name then renamed."""
    root = cache / f"rootfs-{arch}"
    if (root / "usr" / "bin" / "python3").exists():
        return root
    tmp = cache / f"rootfs-{arch}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    print(f"pi-check: building a bookworm {arch} root in {root} (minutes, once)", file=sys.stderr)
    res = run_cmd(
        ["debootstrap", f"--arch={arch}", "--variant=minbase", f"--include={INCLUDE}", "bookworm", str(tmp), MIRROR]
    )
    if res.returncode:
        raise HappysadError(f"pi-check: debootstrap {arch} failed: {(res.stderr or res.stdout)[-300:]}")
    tmp.rename(root)
    return root


@contextlib.contextmanager
def mounted(root: Path):
    """/proc, /sys and /dev bound into ``root``, a Pi 4's cpuinfo over
    /proc/cpuinfo, the host's resolver and CA bundle; all undone after."""
    stage = root / "opt" / "happysad"
    stage.mkdir(parents=True, exist_ok=True)
    (stage / "cpuinfo").write_text(PI4_CPUINFO)
    shutil.copy("/etc/resolv.conf", root / "etc" / "resolv.conf")
    ca = os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt"
    shutil.copy(ca, stage / "ca.crt")
    done = []
    try:
        for sub in ("proc", "sys", "dev"):
            run_cmd(["mount", "--bind", f"/{sub}", str(root / sub)], check=True)
            done.append(root / sub)
        run_cmd(["mount", "--bind", str(stage / "cpuinfo"), str(root / "proc" / "cpuinfo")], check=True)
        done.append(root / "proc" / "cpuinfo")
        yield stage
    finally:
        for path in reversed(done):
            run_cmd(["umount", "-l", str(path)])


def in_root(root: Path, arch: str, script: str, timeout=3600) -> subprocess.CompletedProcess:
    """Run ``script`` with bash inside ``root``, the emulated CPU set, pip
    pointed at the host's CA bundle and proxy."""
    env = {
        "PATH": "/opt/venv/bin:/usr/bin:/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "QEMU_CPU": ARCHES[arch]["cpu"],
        "PIP_CERT": "/opt/happysad/ca.crt",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_DEFAULT_TIMEOUT": "180",
    }
    env.update({k: v for k, v in os.environ.items() if k.lower() in ("http_proxy", "https_proxy", "no_proxy")})
    chroot = shutil.which("chroot") or "/usr/sbin/chroot"  # looked up here: env replaces PATH
    return run_cmd([chroot, str(root), "/bin/bash", "-c", script], env=env, timeout=timeout)


def install(root: Path, arch: str, wheel: Path) -> dict:
    """Make /opt/venv in ``root`` and pip install ``wheel[EXTRA]`` as a Pi user
    would (binary wheels only: a Pi builds nothing from source in reasonable
    time). Returns {"ok", "extra", "log"}; a failed install lists the
    distributions pip found no wheel for."""
    extra = ARCHES[arch]["extra"]
    script = (
        "set -e; rm -rf /opt/venv; python3 -m venv /opt/venv; "
        f'pip install --only-binary=:all: "/opt/happysad/{wheel.name}[{extra}]"'
    )
    res = in_root(root, arch, script)
    log = (res.stdout + res.stderr)[-3000:]
    missing = [] if res.returncode == 0 else missing_wheels(root, arch, wheel, extra)
    result = {"ok": res.returncode == 0, "extra": extra, "route": "pip", "missing_wheels": missing, "log": log}
    apt = ARCHES[arch].get("apt", ())
    if missing and all(_name(r) in apt for r in missing):
        result.update(install_with_apt(root, arch, wheel, extra, missing))
    return result


#: Debian's packages standing in for pip distributions that have no wheel
#: for a platform (32-bit ARM on PyPI): numpy 1.24 and OpenCV 4.6 on bookworm.
APT_PACKAGES = {"numpy": "python3-numpy", "opencv-python-headless": "python3-opencv"}


def install_with_apt(root: Path, arch: str, wheel: Path, extra: str, missing: list[str]) -> dict:
    """What a 32-bit Raspberry Pi OS user does where PyPI has no wheel: the
    missing distributions from apt, a venv that sees them
    (``--system-site-packages``), the rest from pip, the package itself with
    ``--no-deps``. Returns the install fields of :func:`install`."""
    names = [_name(r) for r in missing]
    rest = [r for r in requirements(wheel, extra, "armv7l") if r not in missing]
    script = (
        "set -e; export DEBIAN_FRONTEND=noninteractive PATH=/usr/sbin:/sbin:$PATH; apt-get update -q; "
        f"apt-get install -y -q --no-install-recommends {' '.join(APT_PACKAGES[n] for n in names)}; "
        "rm -rf /opt/venv; python3 -m venv --system-site-packages /opt/venv; "
        f"pip install --only-binary=:all: {' '.join(repr(r) for r in rest)}; "
        f"pip install --no-deps /opt/happysad/{wheel.name}"
    )
    res = in_root(root, arch, script)
    return {
        "ok": res.returncode == 0,
        "route": f"apt ({', '.join(APT_PACKAGES[n] for n in names)}) + pip (the rest, the wheel --no-deps)",
        "log": (res.stdout + res.stderr)[-3000:],
    }


def _name(requirement: str) -> str:
    """The distribution name of a requirement string ("numpy<2,>=1.23" -> "numpy")."""
    from packaging.requirements import Requirement

    return Requirement(requirement).name


def requirements(wheel: Path, extra: str, machine: str) -> list[str]:
    """The requirements ``wheel[extra]`` brings on ``machine`` (platform_machine),
    nested extras of the package itself expanded, markers evaluated."""
    import zipfile

    from packaging.requirements import Requirement

    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    reqs = [
        Requirement(line.split(":", 1)[1].strip()) for line in meta.splitlines() if line.startswith("Requires-Dist:")
    ]
    out, todo, seen = [], [extra], set()
    while todo:
        e = todo.pop()
        seen.add(e)
        env = {"extra": e, "platform_machine": machine, "python_version": "3.11", "sys_platform": "linux"}
        for r in reqs:
            if r.marker is None or not r.marker.evaluate(env):
                continue
            if r.name == "happysad":
                todo += [x for x in r.extras if x not in seen]
            else:
                out.append(f"{r.name}{r.specifier}")
    return sorted(set(out))


def missing_wheels(root: Path, arch: str, wheel: Path, extra: str) -> list[str]:
    """The requirements of ``wheel[extra]`` that have no wheel for ``arch``
    on the package index, each asked of pip inside the root."""
    machine = {"arm64": "aarch64", "armhf": "armv7l"}[arch]
    missing = []
    for req in requirements(wheel, extra, machine):
        res = in_root(root, arch, f'pip download -q --no-deps --only-binary=:all: -d /tmp/wheels "{req}"')
        if res.returncode:
            missing.append(req)
    return missing
