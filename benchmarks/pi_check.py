"""``make pi-check``: the edge install and its answers on a Raspberry Pi's
processor, under emulation, compared with this machine's.

For each architecture a Debian bookworm root filesystem (what Raspberry Pi
OS is built on, Python 3.11) is built once with ``debootstrap`` and cached
outside the repository (``~/.cache/happysad/rootfs-ARCH``). The built wheel
is copied in, a venv made and ``happysad[EXTRA]`` installed from it with pip
exactly as a Pi user would; then ``happysad-edge doctor``, ``info``,
``verify`` and ``classify --json`` run on a fixed set of images (shared
faces and photos, the latter through the face detector) with each model
file, and every label and score is compared with the same command on this
machine. Timings under emulation mean nothing; installs and answers do.

Emulation settings, and why:

- ``QEMU_CPU=cortex-a72`` (a Pi 4's core) for arm64: qemu's default CPU
  (``max``) enables SME, and LiteRT's int8 kernels then give wrong labels on
  about 30% of faces; a real Pi core has no SME.
- ``QEMU_CPU=cortex-a15`` for armhf: an ARMv7 core with NEON, what 32-bit
  Raspberry Pi OS runs on a Pi 2 (qemu-arm offers no ARMv8 core by name).
- ``/proc/cpuinfo`` inside the root is a Pi 4's (bind-mounted): otherwise
  the host's x86 file is read there, and onnxruntime's import crashes on it.

Needs root, x86_64 Linux and Debian's ``debootstrap``, ``qemu-user-static``
and ``binfmt-support`` (installed with apt-get when missing). Exit status 0
when every architecture that installs gives the labels this machine gives;
1 otherwise; 2 for a usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from happysad.edge.cli_util import run_main
from happysad.edge.errors import HappysadError

REPO = Path(__file__).resolve().parent.parent
#: Per architecture: qemu's binfmt handler, the CPU it emulates, the
#: extra installed (no onnxruntime wheel exists for armv7l).
ARCHES = {
    "arm64": {"qemu": "qemu-aarch64", "cpu": "cortex-a72", "extra": "edge-onnx"},
    # armhf runs another stack: tflite-runtime (reference int8 kernels, no
    # XNNPACK) and Debian's OpenCV 4.6 (its own JPEG decoder; no YuNet), so
    # it is compared with this machine's run on the same detector,
    # BlazeFace full range, and scores may differ by a few int8 steps.
    "armhf": {
        "qemu": "qemu-arm",
        "cpu": "cortex-a15",
        "extra": "edge",
        "apt": ("numpy", "opencv-python-headless"),
        "detector": "blazeface-full",
        "tolerance": {"face": 0.05, "photo": 0.05},
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
#: Largest score difference still called the same answer, per group. Whole
#: faces go through the model alone: int8 gave bit-identical scores on
#: arm64 (float ONNX differs by ~1e-6 across CPUs). Photos go through the
#: detector and the aligned crop, whose float math (OpenCV's resize and
#: warpAffine take other SIMD paths on ARM; a keypoint moved 0.1 px) moved
#: 2 of 40 photos' scores by up to 0.02 (5 int8 steps) with the same label.
TOLERANCE = {"face": 1e-3, "photo": 0.05}


def _sh(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


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
        _sh(["apt-get", "update", "-q"], env=env)
        res = _sh(["apt-get", "install", "-y", "-q", "debootstrap", "qemu-user-static", "binfmt-support"], env=env)
        if res.returncode:
            raise HappysadError(
                "pi-check: apt-get could not install debootstrap and qemu-user-static: " + res.stderr[-200:]
            )
    binfmt = Path("/proc/sys/fs/binfmt_misc")
    if not (binfmt / "status").exists():
        _sh(["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt)])
    for arch in ARCHES.values():
        if not (binfmt / arch["qemu"]).exists():
            _sh(["update-binfmts", "--enable", arch["qemu"]])
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
    res = _sh(
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
            _sh(["mount", "--bind", f"/{sub}", str(root / sub)], check=True)
            done.append(root / sub)
        _sh(["mount", "--bind", str(stage / "cpuinfo"), str(root / "proc" / "cpuinfo")], check=True)
        done.append(root / "proc" / "cpuinfo")
        yield stage
    finally:
        for path in reversed(done):
            _sh(["umount", "-l", str(path)])


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
    return _sh([chroot, str(root), "/bin/bash", "-c", script], env=env, timeout=timeout)


def pick_images(data: Path, wild: Path, faces: int, photos: int, dest: Path) -> int:
    """Copy the first ``faces`` files of each class of ``data`` and the first
    ``photos`` of each class of ``wild`` (sorted by name: the same set every
    run) into ``dest``. Returns the number copied."""
    shutil.rmtree(dest, ignore_errors=True)
    n = 0
    for folder, count, tag in ((data, faces, "face"), (wild, photos, "photo")):
        for cls in sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []:
            for f in sorted(cls.iterdir())[:count]:
                target = dest / f"{tag}-{cls.name}" / f.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(f, target)
                n += 1
    if not n:
        raise HappysadError(f"pi-check: no images in {data} or {wild}; give --data and --wild")
    return n


def parse_classify(stdout: str, base: str) -> dict:
    """{path relative to ``base``: (label, scores, basis)} from ``classify --json`` lines."""
    out = {}
    for line in stdout.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            out[os.path.relpath(r["path"], base)] = (r["label"], r["scores"], r["basis"])
    return out


def compare(host: dict, arm: dict, tolerance: dict | None = None) -> dict:
    """Label agreement and the largest score difference over the images both
    classified, overall and per group (``face-*``: whole 48x48 faces,
    ``photo-*``: photos through the face detector)."""
    tolerance = tolerance or TOLERANCE
    out = _compare(host, arm, min(tolerance.values()))
    groups = {}
    for group in sorted({k.split("-", 1)[0] for k in host}):
        pick = lambda d, g=group: {k: v for k, v in d.items() if k.startswith(g + "-")}  # noqa: E731
        groups[group] = _compare(pick(host), pick(arm), tolerance.get(group, min(tolerance.values())))
    out["groups"] = groups
    out["ok"] = bool(groups) and all(g["ok"] for g in groups.values()) and out["missing"] == 0
    return out


def _compare(host: dict, arm: dict, tolerance: float) -> dict:
    common = sorted(set(host) & set(arm))
    same = sum(host[k][0] == arm[k][0] for k in common)
    diff = max((abs(host[k][1][c] - arm[k][1].get(c, 0.0)) for k in common for c in host[k][1]), default=0.0)
    return {
        "images": len(common),
        "missing": len(set(host) ^ set(arm)),
        "labels_agree": same,
        "max_score_diff": diff,
        "faces_found": sum(arm[k][2] == "face" for k in common),
        "ok": bool(common) and same == len(common) and len(set(host) ^ set(arm)) == 0 and diff <= tolerance,
        "differ": sorted(
            k
            for k in common
            if host[k][0] != arm[k][0]
            or max(abs(host[k][1][c] - arm[k][1].get(c, 0.0)) for c in host[k][1]) > tolerance
        )[:20],
    }


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
    if missing and all(r.split("<")[0].split("=")[0].split(">")[0] in apt for r in missing):
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
    names = [r.split("<")[0].split("=")[0].split(">")[0] for r in missing]
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


def run_arch(arch: str, root: Path, wheel: Path, models: list[Path], images: Path, host: dict) -> dict:
    """Install, then doctor, info, verify and classify each model inside ``root``; compared with ``host``."""
    with mounted(root) as stage:
        shutil.copy(wheel, stage / wheel.name)
        shutil.rmtree(stage / "images", ignore_errors=True)
        shutil.copytree(images, stage / "images")
        for m in {*models, *(p.parent / "manifest.json" for p in models)}:
            if m.exists():
                shutil.copy(m, stage / m.name)
        result = {"arch": arch, "qemu_cpu": ARCHES[arch]["cpu"], "install": install(root, arch, wheel)}
        if not result["install"]["ok"]:
            return result
        versions = in_root(root, arch, "python3 -c 'import numpy, cv2; print(numpy.__version__, cv2.__version__)'")
        result["numpy_opencv"] = versions.stdout.strip()
        doctor = in_root(root, arch, "happysad-edge doctor 2>&1; uname -m; python3 --version")
        result["doctor"] = doctor.stdout.strip().splitlines()
        result["models"] = {}
        for m in models:
            if m.suffix == ".onnx" and ARCHES[arch]["extra"] != "edge-onnx":
                continue
            path = f"/opt/happysad/{m.name}"
            info = in_root(root, arch, f"happysad-edge info {path}")
            verify = in_root(root, arch, f"happysad-edge verify {path}")
            detector = ARCHES[arch].get("detector")
            flag = f" --detector {detector}" if detector else ""
            classify = in_root(root, arch, f"happysad-edge classify {path} /opt/happysad/images --json{flag}")
            arm = parse_classify(classify.stdout, "/opt/happysad/images")
            result["models"][m.name] = {
                "info_rc": info.returncode,
                "verify_rc": verify.returncode,
                "verify": (verify.stdout + verify.stderr).strip().splitlines()[-1:],
                "classify_rc": classify.returncode,
                "detector": detector or "default",
                **compare(host[(m.name, detector)], arm, ARCHES[arch].get("tolerance")),
            }
        return result


def host_answers(models: list[Path], images: Path, arches: list[str]) -> dict:
    """{(model name, detector or None): classify --json answers} on this
    machine, for each detector the architectures use."""
    answers = {}
    for detector in {ARCHES[a].get("detector") for a in arches}:
        flag = ["--detector", detector] if detector else []
        for m in models:
            cmd = [sys.executable, "-m", "happysad.edge", "classify", str(m), str(images), "--json", *flag]
            res = _sh(cmd, cwd=REPO)
            if res.returncode not in (0, 1):
                raise HappysadError(f"pi-check: classify {m} failed here: {res.stderr.strip()[-200:]}")
            answers[(m.name, detector)] = parse_classify(res.stdout, str(images))
    return answers


def report_md(results: list[dict], n_images: int) -> str:
    lines = [
        f"# pi-check: {n_images} images, answers under emulation vs x86_64",
        "",
        "| arch | QEMU_CPU | install | model | verify | labels agree | max score diff, faces | max score diff, "
        "photos | faces found in photos | same answers |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        inst = r["install"]
        how = inst["extra"] if inst["route"] == "pip" else f"{inst['extra']} via apt numpy/OpenCV (no PyPI wheel)"
        if not inst["ok"]:
            missing = ", ".join(inst["missing_wheels"]) or "see report.json"
            lines.append(f"| {r['arch']} | {r['qemu_cpu']} | failed: no wheel for {missing} | | | | | | | |")
            continue
        for name, m in r["models"].items():
            face, photo = m["groups"].get("face", {}), m["groups"].get("photo", {})
            lines.append(
                f"| {r['arch']} | {r['qemu_cpu']} | {how} | {name} | "
                f"{'ok' if m['verify_rc'] == 0 else 'FAILED'} | {m['labels_agree']}/{m['images']} | "
                f"{face.get('max_score_diff', 0):.2g} | {photo.get('max_score_diff', 0):.2g} | "
                f"{photo.get('faces_found', 0)}/{photo.get('images', 0)} | "
                f"{'yes' if m['ok'] else 'NO'} |"
            )
    for r in results:
        if r["install"]["missing_wheels"]:
            lines.append(
                f"\n{r['arch']}: PyPI has no wheel for {', '.join(r['install']['missing_wheels'])}; "
                f"install route: {r['install']['route']}."
            )
    return "\n".join(lines) + "\n"


def build_wheel(out: Path) -> Path:
    """The wheel of this checkout, built as ``make wheel`` builds it."""
    res = _sh([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(REPO)])
    wheels = sorted(out.glob("happysad-*.whl"))
    if res.returncode or not wheels:
        raise HappysadError(f"pi-check: the wheel did not build: {res.stderr.strip()[-200:]}")
    return wheels[-1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m happysad.benchmarks.pi_check", description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", type=Path, help="model files (.tflite, .onnx) with their manifest.json beside")
    p.add_argument("--arch", default="arm64,armhf", help="architectures to check, comma-separated (arm64, armhf)")
    p.add_argument(
        "--data", type=Path, default=REPO.parent / "shared/data/fer2013-happy-sad", help="class folders of faces"
    )
    p.add_argument("--wild", type=Path, default=REPO.parent / "shared/data/wild-dev", help="class folders of photos")
    p.add_argument("--faces", type=int, default=150, help="faces per class (default 150)")
    p.add_argument("--photos", type=int, default=20, help="photos per class (default 20)")
    p.add_argument(
        "--cache", type=Path, default=Path.home() / ".cache/happysad", help="where the root filesystems live"
    )
    p.add_argument("--out", type=Path, default=REPO / "runs/pi-check", help="report.json and report.md go here")
    args = p.parse_args(argv)
    arches = [a for a in args.arch.split(",") if a]
    if bad := [a for a in arches if a not in ARCHES]:
        p.error(f"--arch {','.join(bad)}: choose from {', '.join(ARCHES)}")
    if missing := [str(m) for m in args.models if not m.is_file()]:
        raise HappysadError(f"pi-check: no model file {missing[0]}; run make demo first, or name files that exist")
    ensure_host()
    args.out.mkdir(parents=True, exist_ok=True)
    n = pick_images(args.data, args.wild, args.faces, args.photos, args.out / "images")
    host = host_answers(args.models, args.out / "images", arches)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = build_wheel(Path(tmp))
        results = [
            run_arch(a, ensure_rootfs(a, args.cache), wheel, args.models, args.out / "images", host) for a in arches
        ]
    (args.out / "report.json").write_text(json.dumps(results, indent=1))
    md = report_md(results, n)
    (args.out / "report.md").write_text(md)
    print(md)
    installed = [r for r in results if r["install"]["ok"]]
    for r in results:
        inst = r["install"]
        if inst["missing_wheels"]:
            print(
                f"pi-check: {r['arch']}: PyPI has no {r['arch']} wheel for {', '.join(inst['missing_wheels'])}; "
                + (f"installed by {inst['route']}" if inst["ok"] else "not installable here (see report.json)"),
                file=sys.stderr,
            )
    return 0 if installed and all(m["ok"] for r in installed for m in r["models"].values()) else 1


if __name__ == "__main__":
    sys.exit(run_main("pi-check", main))
