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
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from happysad.edge.console import run_main
from happysad.edge.errors import HappysadError

from . import pi_picamera
from .pi_reference import (
    KERNELS_SCRIPT,
    compare_kernels,
    interpreter_differences,
    margin,
    parse_kernels,
    reference_python,
)
from .pi_roots import ARCHES, ensure_host, ensure_rootfs, in_root, install, mounted, run_cmd

REPO = Path(__file__).resolve().parent.parent
#: Largest score difference still called the same answer, per group. Whole
#: faces go through the model alone: int8 gave bit-identical scores on
#: arm64 (float ONNX differs by ~1e-6 across CPUs). Photos go through the
#: detector and the aligned crop, whose float math (OpenCV's resize and
#: warpAffine take other SIMD paths on ARM; a keypoint moved 0.1 px) moved
#: 2 of 40 photos' scores by up to 0.02 (5 int8 steps) with the same label.
TOLERANCE = {"face": 1e-3, "photo": 0.05}


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
    """One group: every label equal, except where this machine's two best
    scores were within ``tolerance`` of each other (a difference the
    tolerance allows can flip those; each is listed in ``near_threshold``),
    and no score further than ``tolerance`` from this machine's."""
    common = sorted(set(host) & set(arm))
    moved = {k: max(abs(host[k][1][c] - arm[k][1].get(c, 0.0)) for c in host[k][1]) for k in common}
    flips = [k for k in common if host[k][0] != arm[k][0]]
    near = [k for k in flips if margin(host[k][1]) <= tolerance and moved[k] <= tolerance]
    diff = max(moved.values(), default=0.0)
    return {
        "images": len(common),
        "missing": len(set(host) ^ set(arm)),
        "labels_agree": len(common) - len(flips),
        "max_score_diff": diff,
        "tolerance": tolerance,
        "faces_found": sum(arm[k][2] == "face" for k in common),
        "near_threshold": near,
        "ok": bool(common) and len(flips) == len(near) and len(set(host) ^ set(arm)) == 0 and diff <= tolerance,
        "differ": sorted(k for k in common if (k in flips and k not in near) or moved[k] > tolerance)[:20],
    }


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
            interp = ARCHES[arch].get("interpreter")
            reference = host[(m.name, detector, interp)]
            result["models"][m.name] = {
                "info_rc": info.returncode,
                "verify_rc": verify.returncode,
                "verify": (verify.stdout + verify.stderr).strip().splitlines()[-1:],
                "classify_rc": classify.returncode,
                "detector": detector or "default",
                "reference": interp or ("onnxruntime" if m.suffix == ".onnx" else "litert"),
                **compare(reference, arm, ARCHES[arch].get("tolerance")),
            }
            if interp:
                result["models"][m.name]["interpreters_here"] = interpreter_differences(
                    host[(m.name, detector, None)], reference
                )
                (stage / "kernels.py").write_text(KERNELS_SCRIPT)
                kernels = in_root(root, arch, f"python3 /opt/happysad/kernels.py {path} /opt/happysad/images")
                k = compare_kernels(host[(m.name, "kernels", interp)], parse_kernels(kernels.stdout))
                result["models"][m.name]["kernels"] = k
                # The reference kernels' integer math must match to the bit.
                result["models"][m.name]["ok"] &= k["faces"] > 0 and k["reference_equal"] == k["faces"]
        return result


def host_answers(models: list[Path], images: Path, arches: list[str], wheel: Path, cache: Path) -> dict:
    """{(model name, detector or None, interpreter or None): classify --json
    answers} on this machine: for each detector the architectures use, by
    this venv (LiteRT, onnxruntime) and by each other interpreter an
    architecture runs (:func:`benchmarks.pi_reference.reference_python`)."""
    answers = {}
    wanted = {(ARCHES[a].get("detector"), None) for a in arches}
    wanted |= {(ARCHES[a].get("detector"), ARCHES[a].get("interpreter")) for a in arches}
    for detector, interp in sorted(wanted, key=str):
        python = reference_python(interp, wheel, cache)
        flag = ["--detector", detector] if detector else []
        for m in models:
            if interp and m.suffix != ".tflite":
                continue
            cmd = [python, "-m", "happysad.edge", "classify", str(m), str(images), "--json", *flag]
            res = run_cmd(cmd, cwd=REPO)
            if res.returncode not in (0, 1):
                raise HappysadError(f"pi-check: classify {m} failed here: {res.stderr.strip()[-200:]}")
            answers[(m.name, detector, interp)] = parse_classify(res.stdout, str(images))
            if interp:  # the kernels' own answers, for compare_kernels
                script = images.parent / "kernels.py"
                script.write_text(KERNELS_SCRIPT)
                res = run_cmd([python, str(script), str(m), str(images)], cwd=REPO)
                answers[(m.name, "kernels", interp)] = parse_kernels(res.stdout)
    return answers


def report_md(results: list[dict], n_images: int) -> str:
    """The report: one row per architecture and model, then every answer
    taken near the decision threshold and, for an architecture with its own
    interpreter, where that interpreter and LiteRT disagree on this machine."""
    lines = [
        f"# pi-check: {n_images} images, answers under emulation vs x86_64",
        "",
        "| arch | QEMU_CPU | install | model | compared with (x86_64) | verify | labels agree | max score diff, "
        "faces | max score diff, photos | faces found in photos | same answers |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    notes = []
    for r in results:
        inst = r["install"]
        how = inst["extra"] if inst["route"] == "pip" else f"{inst['extra']} via apt numpy/OpenCV (no PyPI wheel)"
        if not inst["ok"]:
            missing = ", ".join(inst["missing_wheels"]) or "see report.json"
            lines.append(f"| {r['arch']} | {r['qemu_cpu']} | failed: no wheel for {missing} | | | | | | | | |")
            continue
        for name, m in r["models"].items():
            face, photo = m["groups"].get("face", {}), m["groups"].get("photo", {})
            lines.append(
                f"| {r['arch']} | {r['qemu_cpu']} | {how} | {name} | {m.get('reference', 'litert')} | "
                f"{'ok' if m['verify_rc'] == 0 else 'FAILED'} | {m['labels_agree']}/{m['images']} | "
                f"{face.get('max_score_diff', 0):.2g} | {photo.get('max_score_diff', 0):.2g} | "
                f"{photo.get('faces_found', 0)}/{photo.get('images', 0)} | "
                f"{'yes' if m['ok'] else 'NO'} |"
            )
            notes += _notes(r["arch"], name, m)
    for r in results:
        if r["install"]["missing_wheels"]:
            notes.append(
                f"\n{r['arch']}: PyPI has no wheel for {', '.join(r['install']['missing_wheels'])}; "
                f"install route: {r['install']['route']}."
            )
    return "\n".join(lines + notes) + "\n"


def _notes(arch: str, name: str, m: dict) -> list[str]:
    """The report's lines under the table for one architecture and model."""
    out = []
    for group, g in m["groups"].items():
        for image in g.get("near_threshold", []):
            out.append(
                f"- {arch} {name}: {image} answered otherwise, its two best scores here within the "
                f"{group} tolerance {g['tolerance']:g} of each other (allowed)"
            )
    k = m.get("kernels")
    if k:
        out.append(
            f"\n{arch} {name}, whole faces against {m['reference']} on x86_64: model inputs identical on "
            f"{k['pixels_equal']}/{k['faces']}; TFLite's reference int8 kernels bit-identical on "
            f"{k['reference_equal']}/{k['faces']}; the default kernels identical on {k['default_equal']}/{k['faces']}, "
            f"at most {k['default_max_steps']} output steps apart (the Pi's NEON code paths round otherwise)."
        )
    here = m.get("interpreters_here")
    if here:
        out.append(
            f"\n{arch} {name}: on x86_64, {m['reference']} and LiteRT (XNNPACK) differ on {here['scores_differ']} "
            f"of {here['images']} images (scores up to {here['max_score_diff']:.3f}); labels differ on "
            f"{len(here['labels_differ'])}, each near its decision threshold:"
        )
        for f in here["labels_differ"]:
            out.append(
                f"- {f['image']}: LiteRT {f['litert'][0]} (two best {f['litert_margin']:.3f} apart), "
                f"{m['reference']} {f['other'][0]} ({f['other_margin']:.3f} apart)"
            )
    return out


def build_wheel(out: Path) -> Path:
    """The wheel of this checkout, built as ``make wheel`` builds it."""
    res = run_cmd([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(REPO)])
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
    p.add_argument(
        "--picamera", action="store_true", help="also run picamera-check in an arm64 root (libcamera built there once)"
    )
    args = p.parse_args(argv)
    arches = [a for a in args.arch.split(",") if a]
    if bad := [a for a in arches if a not in ARCHES]:
        p.error(f"--arch {','.join(bad)}: choose from {', '.join(ARCHES)}")
    if missing := [str(m) for m in args.models if not m.is_file()]:
        raise HappysadError(f"pi-check: no model file {missing[0]}; run make demo first, or name files that exist")
    ensure_host()
    args.out.mkdir(parents=True, exist_ok=True)
    n = pick_images(args.data, args.wild, args.faces, args.photos, args.out / "images")
    with tempfile.TemporaryDirectory() as tmp:
        wheel = build_wheel(Path(tmp))
        host = host_answers(args.models, args.out / "images", arches, wheel, args.cache)
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
    ok = installed and all(m["ok"] for r in installed for m in r["models"].values())
    if args.picamera:
        tflite = next((m for m in args.models if m.suffix == ".tflite"), None)
        if tflite is None:
            raise HappysadError("pi-check --picamera: name a .tflite model for the camera check")
        root = pi_picamera.ensure_root(args.cache)
        ok &= pi_picamera.run_check(root, REPO, tflite, args.out / "picamera-arm64", args.cache) == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(run_main("pi-check", main))
