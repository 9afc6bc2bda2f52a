"""A training's time budget and precision (train/budget.py): the processor
check, the epoch plan, the schedule, and a real run in bfloat16 on a budget."""

import json

import numpy as np
import pytest

from happysad.train.budget import epochs_within, native_bfloat16, resolve_precision

from helpers import train_args

ZEN4 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n"
SKYLAKE = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni\n"
SAPPHIRE = "processor\t: 0\nflags\t\t: fpu avx512f amx_bf16 amx_tile\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes crc32 bf16 i8mm\n"


@pytest.mark.parametrize(("text", "native"), [(ZEN4, True), (SAPPHIRE, True), (SKYLAKE, False), (ARM, False)])
def test_native_bfloat16_reads_the_processor_flags(tmp_path, text, native):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(text)
    assert native_bfloat16(cpuinfo) is native
    assert resolve_precision("auto", True, cpuinfo) == ("bfloat16" if native else "float32")
    # Never for a run on several devices or with teachers, and an explicit choice stands.
    assert resolve_precision("auto", False, cpuinfo) == "float32"
    assert resolve_precision("float32", True, cpuinfo) == "float32"
    assert resolve_precision("bfloat16", False, cpuinfo) == "bfloat16"
    # A small training set trains in float32 whatever the processor.
    assert resolve_precision("auto", True, cpuinfo, n_images=120) == "float32"


def test_native_bfloat16_is_false_without_cpuinfo(tmp_path):
    assert native_bfloat16(tmp_path / "missing") is False


def test_epochs_within_plans_on_the_cached_epochs():
    # The first epoch (decoding) is slow; later ones take 10 s: 100 s left hold 10 more.
    assert epochs_within(200, 100, [40, 10, 10, 10, 10, 10, 10], 7, 50) == 17
    # Only the first epoch known: it stands in.
    assert epochs_within(200, 40, [40], 1, 50) == 5
    # Capped by --epochs, never below the epochs done.
    assert epochs_within(10_000, 30, [20, 10], 2, 12) == 12
    assert epochs_within(100, 150, [100, 50], 2, 12) == 2


def test_schedule_warms_up_then_anneals_to_zero_over_the_planned_epochs():
    import keras

    from happysad.train.budget import schedule

    lr = schedule(keras, 1e-2, steps_per_epoch=10, epochs=40)  # warm-up: one epoch (5% of 400 is 20)
    assert float(lr(0)) == 0.0 and float(lr(5)) == pytest.approx(5e-3) and float(lr(10)) == pytest.approx(1e-2)
    assert float(lr(400)) == pytest.approx(0.0, abs=1e-9) and float(lr(205)) == pytest.approx(5e-3, rel=1e-3)
    lr.total_steps.assign(100.0)  # the budget leaves 10 epochs
    assert float(lr(55)) == pytest.approx(5e-3, rel=1e-3) and float(lr(100)) == pytest.approx(0.0, abs=1e-9)
    assert float(lr(300)) == pytest.approx(0.0, abs=1e-9)


def test_bfloat16_run_on_a_budget_plans_its_epochs_and_saves_float32(dataset, tmp_path):
    import keras

    from happysad.train.cli import main

    out = tmp_path / "run"
    # A budget this small ends the run after its second epoch at most.
    args = train_args(dataset, out, 30, "--time-budget", "0.001", "--precision", "bfloat16", "--patience", "30")
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_precision"] == "bfloat16" and metrics["time_budget_min"] == 0.001
    assert metrics["epochs_run"] == metrics["planned_epochs"] <= 2
    assert len(metrics["epoch_seconds"]) == metrics["epochs_run"]
    assert json.loads((out / "config.json").read_text())["time_budget"] == 0.001
    model = keras.saving.load_model(out / "model.keras", compile=False)
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
    assert {w.dtype for w in model.weights} == {"float32"}
    x = np.random.default_rng(0).integers(0, 256, (4, 48, 48, 1)).astype(np.float32)
    p = np.asarray(model(x, training=False))
    assert p.dtype == np.float32 and np.all((p >= 0) & (p <= 1))
    assert keras.mixed_precision.global_policy().name == "float32"  # the process is left as it was


def test_flip_average_ships_a_mirror_invariant_model_in_every_file(dataset, tmp_path):
    import keras

    from happysad.edge import Classifier
    from happysad.export.cli import main as export
    from happysad.train.cli import main as train
    from happysad.train.models import count_macs

    out = tmp_path / "run"
    assert train(train_args(dataset, out, 2, "--flip-average", "--precision", "float32")) == 0
    model = keras.saving.load_model(out / "model.keras", compile=False)
    inner = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    x = np.random.default_rng(0).integers(0, 256, (3, 48, 48, 1)).astype(np.float32)
    both = (np.asarray(inner(x)) + np.asarray(inner(x[:, :, ::-1]))) / 2
    np.testing.assert_allclose(np.asarray(model(x)), both, atol=1e-6)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["macs_per_image"] == count_macs(model) == 2 * count_macs(inner) + 48 * 48 * 48
    assert export([str(out), "--calib-samples", "60", "--max-drop", "100", "--min-accuracy", "0"]) == 0
    pixels = x[0].astype(np.uint8)
    for name, atol in (("model_float32.tflite", 1e-5), ("model_float32.onnx", 1e-5), ("model_int8.tflite", 3 / 256)):
        clf = Classifier(out / "export" / name)
        # The file answers the same for a face and its mirror image: the flip is in the graph.
        np.testing.assert_allclose(clf.scores(pixels), clf.scores(np.ascontiguousarray(pixels[:, ::-1])), atol=atol)
        assert abs(float(clf.scores(pixels)[1]) - float(both[0, 0])) < 0.02 + atol, name
