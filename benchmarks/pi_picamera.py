"""``make pi-check PICAMERA=1``: the camera path of ``make picamera-check``
run on a Pi's processor: libcamera (sid's source, virtual pipeline, Python
bindings) built inside an arm64 root under qemu (Cortex-A72), Picamera2 and
the wheel installed there, and :mod:`.picamera_check` run in that root on
the same frames and with the same tolerance as on x86_64.

The root is a copy of ``make pi-check``'s arm64 root
(``~/.cache/happysad/rootfs-arm64-picamera``), so the check's own install
stays as a Pi user's. The build is done once and recorded in the root
(``/opt/happysad/cache/libcamera-VERSION/build.json``): measured on 2
shared cores, about 30 minutes of compiling under emulation (155 steps,
34 CPU-minutes; the same build takes 1 min 45 s natively). The checkout's
parent folder (the repository and ``../shared``) is bound into the root at
its own path, so the check reads the model, the split and the faces where
they are. Needs root, x86_64 Linux and Debian (apt-get).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from happysad.edge.errors import HappysadError

from . import picamera_build as pb
from .pi_roots import check_ok, ensure_rootfs, in_root, mounted, run_cmd

ROOT_NAME = "rootfs-arm64-picamera"
#: Inside the root: the build (src, build, prefix) and the record picamera_check finds.
STAGE = "/opt/happysad"
RECORDS = f"{STAGE}/cache"


def ensure_root(cache: Path) -> Path:
    """The arm64 root for the camera check: a copy of pi-check's (``cp -a``:
    device nodes stay nodes), made once under a temporary name."""
    root = cache / ROOT_NAME
    if (root / "usr" / "bin" / "python3").exists():
        return root
    base = ensure_rootfs("arm64", cache)
    tmp = cache / f"{ROOT_NAME}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    check_ok(run_cmd(["cp", "-a", str(base), str(tmp)]), f"copying {base}")
    tmp.rename(root)
    return root


def ensure_build(root: Path, cache: Path) -> dict:
    """libcamera built in ``root`` (reused when its record exists): the
    build record, with each step's wall-clock seconds.

    Raises:
        HappysadError: a step failed (one line naming it).
    """
    for record in sorted((root / RECORDS.lstrip("/")).glob("libcamera-*/build.json"), reverse=True):
        info = json.loads(record.read_text())
        if info.get("ok"):
            return {**info, "reused": True}
    version, files = pb.fetch(cache)
    steps = {
        "apt_build_deps": "export DEBIAN_FRONTEND=noninteractive PATH=/usr/sbin:/sbin:$PATH; apt-get update -q && "
        "apt-get install -y -q --no-install-recommends " + " ".join(pb.BUILD_DEPS),
        "unpack": f"cd {STAGE} && rm -rf src build prefix && dpkg-source --no-copy -x {files['dsc'].name} src",
        "meson_setup": f"cd {STAGE}/src && meson setup {STAGE}/build --prefix={STAGE}/prefix --buildtype=release "
        + " ".join(pb.MESON_OPTIONS),
        "ninja": f"ninja -C {STAGE}/build -j2",
        "install": f"ninja -C {STAGE}/build install",
    }
    seconds = {}
    with mounted(root) as stage:
        for f in files.values():
            if f is not None:
                shutil.copy(f, stage / f.name)
        print(f"pi-check: building libcamera {version} in the arm64 root (about 30 minutes, once)", file=sys.stderr)
        for name, script in steps.items():
            started = time.monotonic()
            res = in_root(root, "arm64", script, timeout=4 * 3600)
            seconds[name] = round(time.monotonic() - started, 1)
            check_ok(res, f"libcamera {name} in the arm64 root")
    prefix = root / STAGE.lstrip("/") / "prefix"
    bindings = next(iter(prefix.rglob("libcamera/_libcamera*.so")), None)
    library = next(iter(prefix.rglob("libcamera.so.*")), None)
    if bindings is None or library is None:
        raise HappysadError(f"pi-check: libcamera {version} built without its Python bindings in the arm64 root")
    inside = lambda p: "/" + str(p.relative_to(root))  # noqa: E731
    info = {
        "ok": True,
        "source_package": f"libcamera {version} (Debian sid)",
        "version": version,
        "upstream": f"v{version.split('-')[0]}",
        "built_in": "the arm64 root of make pi-check, under qemu-aarch64 (QEMU_CPU=cortex-a72)",
        "sha256": {f.name: pb.sha256(f) for f in files.values() if f is not None},
        "meson_options": pb.MESON_OPTIONS,
        "step_seconds": seconds,
        "build_seconds": round(sum(seconds.values()), 1),
        "prefix": f"{STAGE}/prefix",
        "libdir": inside(library.parent),
        "pythonpath": inside(bindings.parent.parent),
        "virtual_yaml": f"{STAGE}/prefix/share/libcamera/pipeline/virtual/virtual.yaml",
    }
    record = root / RECORDS.lstrip("/") / f"libcamera-{version}" / "build.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(info, indent=1))
    return {**info, "reused": False}


def run_check(root: Path, repo: Path, model: Path, out: Path, cache: Path) -> int:
    """Build when needed, then :mod:`.picamera_check` inside the root on
    ``model``; the report goes to ``out`` (runs/pi-check/picamera-arm64).
    Returns its exit status (0 all frames within the tolerance, 3 not)."""
    info = ensure_build(root, cache)
    shared = repo.parent
    target = root / str(shared).lstrip("/")
    target.mkdir(parents=True, exist_ok=True)
    prep = (
        "set -e; test -x /opt/pchost/bin/python || python3 -m venv /opt/pchost; "
        f"/opt/pchost/bin/pip install -q -c {repo}/constraints.txt numpy opencv-python-headless build "
        "setuptools==80.9.0 wheel==0.45.1; "
        f"/opt/pchost/bin/pip install -q --no-deps --no-build-isolation -e {repo}"
    )
    check = (
        f"cd {repo} && /opt/pchost/bin/python -m happysad.benchmarks.picamera_check {model.resolve()} "
        f"--cache {RECORDS} --out {out.resolve()}"
    )
    with mounted(root):
        check_ok(run_cmd(["mount", "--bind", str(shared), str(target)]), f"binding {shared} into the arm64 root")
        try:
            check_ok(in_root(root, "arm64", prep, timeout=3600), "the camera check's venv in the arm64 root")
            res = in_root(root, "arm64", check, timeout=3600)
        finally:
            run_cmd(["umount", "-l", str(target)])
    print(res.stdout, end="")
    check_ok(res, "the camera check in the arm64 root", ok=(0, 3))
    print(f"pi-check: libcamera in the arm64 root: {'reused' if info['reused'] else 'built'}", file=sys.stderr)
    return res.returncode
