"""``python -m happysad.benchmarks.edge_speed``: the edge runtime's own speed goals.

Three figures, each a ratio taken within one run, so a noisy shared machine
moves both sides alike:

1. The per-face path (preprocess a face crop, write the input, invoke, read
   the output, scores and label) against the interpreter's invoke alone:
   goal at most 1.5x.
2. The camera loop on a recorded video (decode, detect, classify, JSON line
   out) against the frame rate detection plus classification allow on the
   same frames already decoded: goal at least 90%.
3. A fresh edge process from start to first prediction against the same
   prediction with TensorFlow and the Keras model: goal at least 20x faster
   and at most a tenth of the peak memory.

Exit status 3 when a goal is missed, as ``happysad-bench``'s gates.
"""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import numpy as np

from happysad.edge import Classifier, HappysadError
from happysad.edge.camera.loop import run as run_camera
from happysad.edge.camera.options import CAMERA_DETECTOR, DETECT_EVERY, DETECT_WIDTH, MIN_FACE, CameraOptions
from happysad.edge.console import ArgumentParser, positive_int, run_main
from happysad.edge.errors import UsageError
from happysad.edge.faces import DETECTORS, make_detector
from happysad.edge.fileio import write_json

from .coldstart import cold_starts
from .timing import time_stages
from .video import face_frames, write_video

PROG = "python -m happysad.benchmarks.edge_speed"
GOALS = {
    "per_face_over_invoke": 1.5,
    "loop_over_allowed": 0.9,
    "cold_speedup": 20.0,
    "cold_memory": 10.0,
    "detect_speedup_vs_haar": 3.0,
    "loop_speedup_vs_haar": 2.5,
}


def per_face_ratio(clf: Classifier, frames, runs: int) -> dict:
    """p50 of the whole per-face path and of invoke alone, on the first face found (ms)."""
    for frame in frames:
        faces, _ = clf.detect_faces(frame)
        if faces:
            break
    else:
        raise HappysadError("no face found in the benchmark frames; check --data")
    face = clf.crop_face(frame, faces[0])
    whole = time_stages([lambda: clf.classify(face)], runs, warmup=50)[:, 0]
    clf.backend.set_input(np.zeros(clf.backend.input_shape[1:], np.uint8))
    invoke = time_stages([clf.backend.invoke], runs, warmup=50)[:, 0]
    p_whole, p_invoke = float(np.median(whole)), float(np.median(invoke))
    return {"per_face_p50_ms": p_whole, "invoke_p50_ms": p_invoke, "per_face_over_invoke": p_whole / p_invoke}


def loop_ratio(clf: Classifier, frames, video: Path) -> dict:
    """Frames per second of the camera loop on ``video`` against detection plus
    classification alone on the same (already decoded) frames (Hz)."""
    # The loop first, so both sides run after the same warm-up of caches.
    sink = io.StringIO()
    summary = run_camera(clf, CameraOptions(source=str(video), headless=True, detect_every=1), out=sink)
    t0 = time.perf_counter()
    for frame in frames:
        clf.classify_faces(frame, largest_only=True)
    allowed = len(frames) / (time.perf_counter() - t0)
    return {
        "loop_fps": summary["fps"],
        "allowed_fps": allowed,
        "loop_over_allowed": summary["fps"] / allowed,
        "frames": summary["frames"],
        "frames_with_face": summary["frames_with_face"],
    }


def camera_detector(name: str):
    """A detector set up as ``happysad-edge camera`` sets it up by default."""
    return make_detector(name, MIN_FACE, DETECT_WIDTH, fallback=False)


def detector_race(model, frames, video: Path) -> dict:
    """Each detector against Haar on the same 640x480 frames, in one run.

    Per detector: the p50 of one detection call (ms), its speed-up over
    Haar's p50, and the camera loop on ``video`` with that detector and
    the camera's defaults (``--detect-every``), in FPS, with the share of
    the loop's frame time spent detecting (from the loop's own JSON lines).
    Haar's loop runs with ``--detect-every 1``, as the camera ran before
    there was a choice. The goals are read on the camera's default
    detector (:data:`edge.camera.loop.CAMERA_DETECTOR`).
    """
    import json

    out = {}
    for name in DETECTORS:
        det = camera_detector(name)
        for frame in frames[:5]:  # warm-up
            det.detect(frame)
        times = []
        for frame in frames:
            t0 = time.perf_counter()
            det.detect(frame)
            times.append((time.perf_counter() - t0) * 1e3)
        detect_p50 = float(np.median(times))
        clf = Classifier(model, detector=det)
        sink = io.StringIO()
        every = 1 if name == "haar" else DETECT_EVERY
        summary = run_camera(clf, CameraOptions(source=str(video), headless=True, detect_every=every), out=sink)
        lines = [json.loads(line) for line in sink.getvalue().splitlines()]
        share = sum(r["ms"]["detect"] for r in lines) / max(1e-9, sum(r["ms"]["total"] for r in lines))
        out[name] = {
            "detect_p50_ms": detect_p50,
            "loop_fps": summary["fps"],
            "detect_every": every,
            "frames_with_face": summary["frames_with_face"],
            "detect_share": share,
        }
    for name in DETECTORS:
        out[name]["detect_speedup_vs_haar"] = out["haar"]["detect_p50_ms"] / out[name]["detect_p50_ms"]
        out[name]["loop_speedup_vs_haar"] = out[name]["loop_fps"] / out["haar"]["loop_fps"]
    return {
        "detectors": out,
        "detect_speedup_vs_haar": out[CAMERA_DETECTOR]["detect_speedup_vs_haar"],
        "loop_speedup_vs_haar": out[CAMERA_DETECTOR]["loop_speedup_vs_haar"],
    }


#: The stages of an edge process that are not edge's own code: Python,
#: numpy, OpenCV and one interpreter, the floor every edge process pays.
FLOOR_STAGES = ("python", "numpy", "opencv", "interpreter library")


def added(stages: list[dict]) -> list[float]:
    """What each stage added to the process's peak RSS (MB)."""
    peaks = [0.0] + [st["peak_rss_mb"] for st in stages]
    return [b - a for a, b in zip(peaks, peaks[1:])]


def cold_ratio(model, keras_model, image, runs: int) -> dict:
    """Medians of ``runs`` fresh processes each, interleaved: edge model and Keras model.

    Besides the two ratios, the floor: the time and the memory that Python,
    numpy, OpenCV and the interpreter library take in the edge process
    (:data:`FLOOR_STAGES`), and the ratios the Keras process would have
    against that floor alone, the best an edge process could reach here.
    """
    edge_cs, keras_cs = cold_starts([model, keras_model], image, runs)
    floor = [
        (st["ms"], mb) for st, mb in zip(edge_cs["stages"], added(edge_cs["stages"])) if st["stage"] in FLOOR_STAGES
    ]
    floor_ms = sum(ms for ms, _ in floor)
    floor_mb = sum(mb for _, mb in floor)
    return {
        "edge_ms": edge_cs["ms"],
        "edge_peak_rss_mb": edge_cs["peak_rss_mb"],
        "keras_ms": keras_cs["ms"],
        "keras_peak_rss_mb": keras_cs["peak_rss_mb"],
        "cold_speedup": keras_cs["ms"] / edge_cs["ms"],
        "cold_memory": keras_cs["peak_rss_mb"] / edge_cs["peak_rss_mb"],
        "floor_ms": floor_ms,
        "floor_peak_rss_mb": floor_mb,
        "floor_speedup": keras_cs["ms"] / floor_ms,
        "floor_memory": keras_cs["peak_rss_mb"] / floor_mb,
        "edge_stages": edge_cs["stages"],
        "keras_stages": keras_cs["stages"],
    }


def stage_line(name: str, stages: list[dict]) -> str:
    """One line: each stage's own ms and the MB it added to the peak."""
    parts = [f"{st['stage']} {st['ms']:.0f} ms +{mb:.1f} MB" for st, mb in zip(stages, added(stages))]
    return f"  {name}: " + ", ".join(parts)


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("model", metavar="MODEL", help="the .tflite or .onnx file a device runs")
    p.add_argument(
        "--keras",
        metavar="MODEL.keras",
        default=None,
        help="the run's Keras model, for the cold-start comparison (needs TensorFlow)",
    )
    p.add_argument(
        "--data",
        metavar="DIR",
        required=True,
        help="labelled face photos to build the video from (make passes ../shared/data/fer2013-happy-sad)",
    )
    p.add_argument("--frames", type=positive_int, default=300, help="frames in the test video")
    p.add_argument("--runs", type=positive_int, default=2000, help="timed runs for the per-face ratio")
    p.add_argument("--cold-runs", type=positive_int, default=5, help="fresh processes per side, after one untimed")
    p.add_argument("--workdir", metavar="DIR", default="runs/edge-speed", help="where the test video goes")
    p.add_argument("--json", metavar="FILE", default=None, help="also write every figure here")
    return p


def _report_lines(figures: dict, keras: bool) -> list[str]:
    """The printed report: per-face and loop ratios, each detector, and the cold start when measured."""
    lines = [
        f"per-face path p50 {figures['per_face_p50_ms']:.3f} ms, invoke alone {figures['invoke_p50_ms']:.3f} ms: "
        f"{figures['per_face_over_invoke']:.2f}x (goal <= {GOALS['per_face_over_invoke']}x)",
        f"camera loop {figures['loop_fps']:.1f} FPS on {figures['frames']} frames ({figures['frames_with_face']} "
        f"with a face), detection + classification allow {figures['allowed_fps']:.1f} FPS: "
        f"{figures['loop_over_allowed']:.1%} (goal >= {GOALS['loop_over_allowed']:.0%})",
    ]
    for name, d in figures["detectors"].items():
        lines.append(
            f"detector {name}: p50 {d['detect_p50_ms']:.2f} ms per 640x480 frame "
            f"({d['detect_speedup_vs_haar']:.1f}x Haar); camera loop {d['loop_fps']:.1f} FPS "
            f"(--detect-every {d['detect_every']}, {d['loop_speedup_vs_haar']:.2f}x Haar's loop), "
            f"detection {d['detect_share']:.0%} of the frame time"
        )
    lines.append(
        f"the camera's default detector {CAMERA_DETECTOR}: {figures['detect_speedup_vs_haar']:.1f}x faster "
        f"detection (goal >= {GOALS['detect_speedup_vs_haar']:g}x), loop "
        f"{figures['loop_speedup_vs_haar']:.2f}x Haar's (goal >= {GOALS['loop_speedup_vs_haar']:g}x)"
    )
    if keras:
        lines += [
            f"cold start to first prediction: edge {figures['edge_ms']:.0f} ms, {figures['edge_peak_rss_mb']:.1f} MB; "
            f"Keras {figures['keras_ms']:.0f} ms, {figures['keras_peak_rss_mb']:.1f} MB: "
            f"{figures['cold_speedup']:.1f}x faster (goal >= {GOALS['cold_speedup']:g}x), "
            f"{figures['cold_memory']:.1f}x less memory (goal >= {GOALS['cold_memory']:g}x)",
            "where the time and the peak memory go (medians; +MB: what the stage added to the peak):",
            stage_line("edge", figures["edge_stages"]),
            stage_line("Keras", figures["keras_stages"]),
            f"  the floor (Python, numpy, OpenCV and the interpreter library, none of edge's own code): "
            f"{figures['floor_ms']:.0f} ms, {figures['floor_peak_rss_mb']:.1f} MB, at best "
            f"{figures['floor_speedup']:.1f}x faster and {figures['floor_memory']:.1f}x less memory than Keras",
        ]
    return lines


def _body(argv) -> int:
    args = build_parser().parse_args(argv)
    if args.keras and not Path(args.keras).is_file():
        raise UsageError(f"{args.keras}: no such Keras model; check --keras")
    clf = Classifier(args.model, detector=camera_detector(CAMERA_DETECTOR))
    frames = face_frames(args.data, args.frames)
    work = Path(args.workdir)
    video = write_video(work / "faces.avi", frames)
    still = work / "face.png"
    import cv2

    cv2.imwrite(str(still), frames[0])
    figures = {
        **per_face_ratio(clf, frames, args.runs),
        **loop_ratio(clf, frames, video),
        **detector_race(args.model, frames, video),
    }
    if args.keras:
        figures.update(cold_ratio(args.model, args.keras, still, args.cold_runs))
    lines = _report_lines(figures, bool(args.keras))
    print("\n".join(lines))
    if args.json:
        write_json(args.json, {"model": str(args.model), "keras": args.keras, "goals": GOALS, **figures})
    missed = [
        k
        for k, goal in GOALS.items()
        if k in figures and (figures[k] > goal if k == "per_face_over_invoke" else figures[k] < goal)
    ]
    if missed:

        def why(k):
            text = f"{k} {figures[k]:.2f}x, goal {'<=' if k == 'per_face_over_invoke' else '>='} {GOALS[k]:g}x"
            if k == "cold_memory" and "floor_memory" in figures:
                text += (
                    f" (Python, numpy, OpenCV and the interpreter alone allow at most "
                    f"{figures['floor_memory']:.1f}x on this machine)"
                )
            return text

        print(f"{PROG}: missed (exit 3, a goal, not a crash): {'; '.join(why(k) for k in missed)}", file=sys.stderr)
        return 3
    return 0


def main(argv=None) -> int:
    """Entry point; returns the exit code (3 when a goal is missed)."""
    return run_main(PROG, _body, argv)


if __name__ == "__main__":
    sys.exit(main())
