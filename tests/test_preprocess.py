import cv2
import numpy as np
import pytest

from happysad.edge import HappysadError, load_image, preprocess


def test_gray_file_round_trips_exactly(tmp_path):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (48, 48), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    out = preprocess(load_image(tmp_path / "g.png"), (48, 48), "gray")
    assert out.shape == (48, 48, 1) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :, 0], gray)


def test_bgr_is_converted_to_rgb_once():
    bgr = np.zeros((10, 12, 3), np.uint8)
    bgr[..., 0] = 200  # blue in OpenCV's order
    out = preprocess(bgr, (10, 12), "rgb")
    assert out.shape == (10, 12, 3)
    assert out[0, 0].tolist() == [0, 0, 200]


@pytest.mark.parametrize("shape", [(100, 80), (100, 80, 1), (100, 80, 3), (100, 80, 4), (20, 30, 3)])
def test_any_layout_gives_model_input(shape):
    img = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    for color, channels in (("gray", 1), ("rgb", 3)):
        out = preprocess(img, (48, 48), color)
        assert out.shape == (48, 48, channels) and out.dtype == np.uint8


def test_gray_matches_bt601_luma():
    bgr = np.array([[[10, 20, 30]]], np.uint8)
    out = preprocess(bgr, (1, 1), "gray")
    expected = round(0.299 * 30 + 0.587 * 20 + 0.114 * 10)
    assert abs(int(out[0, 0, 0]) - expected) <= 1


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((4, 4), np.float32),
        np.zeros((4, 4, 2), np.uint8),
        np.zeros((0, 4), np.uint8),
        np.zeros((2, 2, 2, 2), np.uint8),
    ],
)
def test_bad_arrays_raise_clear_error(bad):
    with pytest.raises(HappysadError):
        preprocess(bad)


def test_unknown_color_mode():
    with pytest.raises(HappysadError, match="color mode"):
        preprocess(np.zeros((4, 4), np.uint8), color="hsv")


def test_load_image_reasons(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    with pytest.raises(HappysadError, match="empty file"):
        load_image(tmp_path / "empty.jpg")
    with pytest.raises(HappysadError, match="not a decodable image"):
        load_image(tmp_path / "text.jpg")
    with pytest.raises(HappysadError, match="cannot read"):
        load_image(tmp_path / "missing.jpg")


def test_int8_xor_fast_path_equals_affine_quantization():
    from happysad.edge.runtime.quantization import quantize

    x = np.arange(256, dtype=np.uint8)
    flipped = np.bitwise_xor(x, 0x80).view(np.int8)
    np.testing.assert_array_equal(flipped, quantize(x, 1.0, -128, np.int8))
    np.testing.assert_array_equal(flipped.astype(int), x.astype(int) - 128)


def test_face_crop_samples_whole_multiples_of_the_input_about_the_box_centre():
    from happysad.edge.faces import Face
    from happysad.edge.faces.crop import face_crop

    image = np.zeros((480, 640), np.uint8)
    image[175, 195] = 255  # the box centre
    crop = face_crop(image, Face((100, 80, 190, 190)), (48, 48), margin=0.1)
    assert crop.shape == (240, 240)  # 190 * 1.2 = 228 -> 5 x 48
    ys, xs = np.nonzero(crop)
    assert abs(ys.mean() - 120) <= 1.5 and abs(xs.mean() - 120) <= 1.5  # same centre
    # At the image edge the crop repeats the border instead of shrinking.
    assert face_crop(image, Face((0, 0, 100, 100)), (48, 48), margin=0.1).shape == (96, 96)
