"""libcamera with its virtual camera and Python bindings, built once from
Debian's source package, and a venv with Picamera2 that sees it: the
ground ``make picamera-check`` (:mod:`.picamera_check`) runs on.

The source is sid's ``libcamera`` (0.7.2 when this was written; sid moves
on, so the version it serves is taken and recorded), fetched with
``apt-get source --download-only`` through a sources file and lists folder
of its own (the machine's apt setup is untouched) and unpacked with
``dpkg-source``, which checks the files against the ``.dsc``. It is built
with the virtual pipeline only, the Python bindings for Debian's
``/usr/bin/python3`` and udev (without it libcamera's sysfs scan fails on
a kernel with no ``/sys/bus/media``), into
``~/.cache/happysad/libcamera-VERSION/``, whose ``build.json`` records the
version, the sha256 of each source file, the options and the build time;
a later run reuses it. Needs root (apt-get) on Debian bookworm or later.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from happysad.edge.errors import HappysadError

REPO = Path(__file__).resolve().parent.parent
#: Debian's interpreter: meson needs its ``ply``, the bindings are built for it.
SYSTEM_PYTHON = "/usr/bin/python3"
#: Where the source comes from: Debian unstable, which serves 0.7.x.
SOURCES_LINE = "deb-src http://deb.debian.org/debian sid main"
PICAMERA2 = "picamera2==0.3.38"
BUILD_DEPS = (
    "meson ninja-build g++ pkg-config libyaml-dev python3-yaml python3-ply python3-jinja2 pybind11-dev "
    "python3-pybind11 libjpeg-dev libyuv-dev libgnutls28-dev openssl libudev-dev libevent-dev libcap-dev "
    "python3-dev python3-venv dpkg-dev"
).split()
MESON_OPTIONS = (
    "-Dpipelines=virtual -Dpycamera=enabled -Dipas= -Dudev=enabled -Dcam=disabled -Dqcam=disabled "
    "-Dgstreamer=disabled -Dlc-compliance=disabled -Dtest=false -Ddocumentation=disabled -Dv4l2=disabled "
    "-Dtracing=disabled"
).split()


def _run(cmd: list[str], what: str, **kw) -> subprocess.CompletedProcess:
    """Run ``cmd``; on failure raise one line: ``what`` and the last error line."""
    res = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if res.returncode:
        lines = [ln for ln in (res.stderr + res.stdout).splitlines() if ln.strip()]
        last = next((ln for ln in reversed(lines) if "error" in ln.lower()), lines[-1] if lines else "")
        raise HappysadError(f"picamera-check: {what} failed (exit {res.returncode}): {last.strip()[:300]}")
    return res


def sha256(path: Path) -> str:
    """The file's sha256, hex."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _apt(cache: Path) -> list[str]:
    """apt-get with the sid source line, in a sources file and lists folder of its own."""
    apt = cache / "apt-sid"
    (apt / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (apt / "sources.list").write_text(SOURCES_LINE + "\n")
    return [
        "apt-get",
        "-o",
        f"Dir::Etc::sourcelist={apt / 'sources.list'}",
        "-o",
        "Dir::Etc::sourceparts=/dev/null",
        "-o",
        f"Dir::State::Lists={apt / 'lists'}",
    ]


def fetch(cache: Path) -> tuple[str, dict[str, Path]]:
    """Download sid's libcamera source package: (Debian version, {kind: file})."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise HappysadError("picamera-check: the first run needs root and apt-get (Debian) to build libcamera")
    print(f"picamera-check: installing the build dependencies: {' '.join(BUILD_DEPS)}", file=sys.stderr)
    _run(["apt-get", "install", "-y", "--no-install-recommends", *BUILD_DEPS], "apt-get install")
    apt = _apt(cache)
    _run([*apt, "update"], "apt-get update (sid sources)")
    dl = cache / "libcamera-download"
    shutil.rmtree(dl, ignore_errors=True)
    dl.mkdir(parents=True)
    _run([*apt, "source", "--download-only", "libcamera"], "apt-get source libcamera (sid)", cwd=dl)
    dsc = next(iter(sorted(dl.glob("libcamera_*.dsc"))), None)
    if dsc is None:
        raise HappysadError(f"picamera-check: apt-get source gave no .dsc in {dl}")
    files = {"dsc": dsc}
    for kind in ("orig", "debian"):
        files[kind] = next(iter(dl.glob(f"libcamera_*.{kind}.tar.*")), None)
    return dsc.stem.split("_", 1)[1], files


def build(cache: Path) -> dict:
    """Fetch, unpack, configure, compile and install; returns the build record."""
    version, files = fetch(cache)
    root = cache / f"libcamera-{version}"
    shutil.rmtree(root, ignore_errors=True)
    src, out, prefix = root / "src", root / "build", root / "prefix"
    root.mkdir(parents=True)
    _run(["dpkg-source", "--no-copy", "-x", str(files["dsc"]), str(src)], "dpkg-source -x (checksums of the .dsc)")
    env = {**os.environ, "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"}  # Debian's python3, whatever the user's PATH
    started = time.monotonic()
    print(f"picamera-check: building libcamera {version} (a few minutes on 2 cores)", file=sys.stderr)
    _run(
        ["meson", "setup", str(out), f"--prefix={prefix}", "--buildtype=release", *MESON_OPTIONS],
        f"meson setup of libcamera {version}",
        cwd=src,
        env=env,
    )
    _run(["ninja", "-C", str(out), f"-j{os.cpu_count() or 2}"], f"building libcamera {version}", env=env)
    _run(["ninja", "-C", str(out), "install"], f"installing libcamera {version}", env=env)
    bindings = next(iter(prefix.rglob("libcamera/_libcamera*.so")), None)
    library = next(iter(prefix.rglob("libcamera.so.*")), None)
    if bindings is None or library is None:
        raise HappysadError(f"picamera-check: libcamera {version} built without its Python bindings under {prefix}")
    upstream = version.split("-")[0]
    return {
        "ok": True,
        "source_package": f"libcamera {version} (Debian sid)",
        "version": version,
        "upstream": f"v{upstream} (the source package's upstream tarball of tag v{upstream})",
        "sha256": {f.name: sha256(f) for f in files.values() if f is not None},
        "meson_options": MESON_OPTIONS,
        "build_seconds": round(time.monotonic() - started, 1),
        "prefix": str(prefix),
        "libdir": str(library.parent),
        "pythonpath": str(bindings.parent.parent),
        "virtual_yaml": str(prefix / "share/libcamera/pipeline/virtual/virtual.yaml"),
    }


def ensure_libcamera(cache: Path, rebuild: bool = False) -> dict:
    """The cached build's record, building it first when there is none
    (or ``rebuild``: fetch what sid serves now)."""
    for record in sorted(cache.glob("libcamera-*/build.json"), reverse=True):
        info = json.loads(record.read_text())
        if info.get("ok") and Path(info["pythonpath"]).is_dir() and not rebuild:
            info["reused"] = True
            return info
    cache.mkdir(parents=True, exist_ok=True)
    info = build(cache)
    Path(info["prefix"]).parent.joinpath("build.json").write_text(json.dumps(info, indent=1))
    info["reused"] = False
    return info


def ensure_venv(info: dict, wheel: Path) -> Path:
    """A venv on Debian's Python that sees the built bindings (a ``.pth``
    file), with Picamera2 and the wheel's ``edge`` extra (constraints.txt's
    versions); the wheel reinstalled every run. Returns its python."""
    venv = Path(info["prefix"]).parent / "venv"
    python = venv / "bin" / "python"
    if not python.exists():
        _run([SYSTEM_PYTHON, "-m", "venv", "--system-site-packages", str(venv)], "creating the venv")
        site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], "venv paths")
        Path(site.stdout.strip(), "libcamera-build.pth").write_text(info["pythonpath"] + "\n")
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    constraints = str(REPO / "constraints.txt")
    _run([*pip, "-c", constraints, PICAMERA2, f"{wheel}[edge]"], f"pip install {PICAMERA2} and the wheel")
    _run([*pip, "--no-deps", "--force-reinstall", str(wheel)], "pip install of this checkout's wheel")
    record = Path(info["prefix"]).parent / "build.json"
    saved = json.loads(record.read_text())
    saved["venv"] = str(venv)
    record.write_text(json.dumps(saved, indent=1))
    info["venv"] = str(venv)
    return python


def build_wheel(out: Path) -> Path:
    """The wheel of this checkout, built as ``make wheel`` builds it."""
    _run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(REPO)], "building the wheel")
    return sorted(out.glob("happysad-*.whl"))[-1]


def virtual_yaml(info: dict, frames: Path, sizes=((640, 480), (320, 240))) -> Path:
    """Write the virtual camera's config: one camera, ``sizes`` at 30 FPS,
    frames from ``frames/`` (0.jpg, 1.jpg, ...). Returns its path."""
    formats = "".join(f"  - width: {w}\n    height: {h}\n    frame_rates:\n    - 30\n" for w, h in sizes)
    path = Path(info["virtual_yaml"])
    path.write_text(
        "%YAML 1.1\n---\n"
        f'"Virtual0":\n  supported_formats:\n{formats}'
        f'  frames:\n    path: "{frames.resolve()}/"\n'
        '  location: "CameraLocationFront"\n  model: "happysad virtual camera"\n'
    )
    return path
