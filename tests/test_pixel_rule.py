"""One image→RGB rule (issue 29, item 4): the engine, UniRES's processor and the captioner see the same pixels.

Each file below, in one PIL mode, goes through the engine's `LoadImages` stage, the processor
(`UniRESImageProcessor`, whose reading is `to_rgb_image`), the captioner's `load_image` and the SAM backends' input
(`mres_engine.backends._rgb`); all must give the same RGB pixels, bit for bit. Before the one rule the engine dropped
alpha and the processor kept the high byte of 16-bit images, so RGBA, LA, P with transparency and I;16 differed.
"""

import numpy as np
import pytest
from PIL import Image

from captioner.encoding import load_image
from modeling_unires.image_processing_unires import UniRESImageProcessor, to_rgb_image
from mres_engine import backends
from mres_engine.records import ImageRecord
from mres_engine.stages.load_images import LoadImages
from unires.evaluation.segmenters.base import rgb as evaluation_rgb

WIDTH, HEIGHT = 24, 18
EXIF_ORIENTATION = 0x0112


def _random(dtype=np.uint8, high=256, channels=None, seed=0):
    shape = (HEIGHT, WIDTH) if channels is None else (HEIGHT, WIDTH, channels)
    return np.random.default_rng(seed).integers(0, high, size=shape).astype(dtype)


def _palette(transparent: bool) -> tuple[Image.Image, dict]:
    image = Image.fromarray(_random(channels=3)).quantize(colors=16)
    return image, ({"transparency": 3} if transparent else {})


def _write(path, mode: str) -> None:
    """A WIDTH x HEIGHT file of `mode` with varied pixels, in a format that keeps the mode when read back."""
    if mode == "RGB":
        Image.fromarray(_random(channels=3)).save(path)
    elif mode == "RGBA":  # partial alpha, transparent and opaque pixels
        Image.fromarray(_random(channels=4)).save(path)
    elif mode == "LA":
        Image.fromarray(_random(channels=2)[..., :2].copy(), mode="LA").save(path)
    elif mode in ("P", "P transparent"):
        image, extra = _palette(mode == "P transparent")
        image.save(path, **extra)
    elif mode == "CMYK":
        Image.fromarray(_random(channels=4), mode="CMYK").save(path)  # TIFF: lossless CMYK
    elif mode == "L":
        Image.fromarray(_random()).save(path)
    elif mode == "1":
        Image.fromarray(_random(high=2).astype(bool)).save(path)
    elif mode == "I;16":  # a 16-bit PNG: the whole range, black and white included
        values = _random(np.uint16, 65536)
        values[0, :4] = [0, 129, 65280, 65535]
        Image.fromarray(values).save(path)
    elif mode == "I":  # 32-bit TIFF holding 16-bit values
        Image.fromarray(_random(np.int32, 65536), mode="I").save(path)
    elif mode == "F":  # float TIFF in [0, 1]
        Image.fromarray(np.random.default_rng(0).random((HEIGHT, WIDTH)).astype(np.float32), mode="F").save(path)
    elif mode == "EXIF-rotated JPEG":  # stored WIDTH x HEIGHT, shown turned (orientation 6: 90° clockwise)
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = 6
        Image.fromarray(_random(channels=3)).save(path, "JPEG", quality=95, exif=exif.tobytes())
    else:  # pragma: no cover
        raise AssertionError(mode)


SUFFIX = {"CMYK": ".tif", "I": ".tif", "F": ".tif", "EXIF-rotated JPEG": ".jpg"}
MODES = ["RGB", "RGBA", "LA", "P", "P transparent", "CMYK", "L", "1", "I;16", "I", "F", "EXIF-rotated JPEG"]
OPENED_AS = {"P transparent": "P", "EXIF-rotated JPEG": "RGB"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("modes")
    paths = {}
    for mode in MODES:
        path = folder / f"{mode.replace(' ', '_').replace(';', '_')}{SUFFIX.get(mode, '.png')}"
        _write(path, mode)
        with Image.open(path) as opened:
            assert opened.mode == OPENED_AS.get(mode, mode), f"{mode}: the fixture opens as {opened.mode}"
        paths[mode] = path
    return paths


def _engine_pixels(path, width=WIDTH, height=HEIGHT) -> np.ndarray:
    out = LoadImages()([ImageRecord("img", str(path), width, height, "test")])
    assert not out.rejects, out.rejects
    (record,) = out.records
    assert record.image.mode == "RGB"
    return np.asarray(record.image)


@pytest.mark.parametrize("mode", MODES)
def test_every_reader_sees_the_same_pixels(files, mode):
    path = files[mode]
    with Image.open(path) as opened:
        processor_pixels = np.asarray(UniRESImageProcessor().prepare_images(opened)[0])
    engine = _engine_pixels(path)
    captioner_from_path = np.asarray(load_image(str(path), item=mode))
    captioner_from_bytes = np.asarray(load_image(path.read_bytes(), item=mode))
    with Image.open(path) as opened:
        sam_input = np.asarray(backends._rgb(to_rgb_image(opened)))
    with Image.open(path) as opened:  # what every evaluation adapter hands its model
        evaluator_input = np.asarray(evaluation_rgb(opened))
    upright = (WIDTH, HEIGHT) if mode != "EXIF-rotated JPEG" else (HEIGHT, WIDTH)
    assert processor_pixels.shape == (upright[1], upright[0], 3)
    for name, pixels in [("engine", engine), ("captioner (path)", captioner_from_path),
                         ("captioner (bytes)", captioner_from_bytes), ("SAM input", sam_input),
                         ("evaluator", evaluator_input)]:
        assert np.array_equal(pixels, processor_pixels), f"{mode}: {name} differs from the processor"


def test_the_engine_turns_a_rotated_photo_once_whichever_frame_the_manifest_gives(files):
    path = files["EXIF-rotated JPEG"]
    with Image.open(path) as opened:
        expected = np.asarray(to_rgb_image(opened))
    assert expected.shape[:2] == (WIDTH, HEIGHT)  # upright: 18 wide, 24 high
    assert np.array_equal(_engine_pixels(path, HEIGHT, WIDTH), expected)  # manifest in the upright frame


def test_the_rule_values():
    # 16 bits: the nearest 8-bit level round(v / 257), not the high byte (129 -> 0, 65280 -> 255) nor PIL's clip.
    sixteen = Image.fromarray(np.array([[0, 128, 129, 32768, 65280, 65535]], np.uint16))
    assert sixteen.mode == "I;16"
    assert np.asarray(to_rgb_image(sixteen))[0, :, 0].tolist() == [0, 0, 1, 128, 254, 255]
    # Alpha on white: transparent black is white, half-transparent black is mid-grey, opaque keeps its colour.
    rgba = Image.fromarray(np.array([[[0, 0, 0, 0], [0, 0, 0, 128], [10, 20, 30, 255]]], np.uint8))
    assert np.asarray(to_rgb_image(rgba))[0].tolist() == [[255, 255, 255], [127, 127, 127], [10, 20, 30]]
    palette, extra = _palette(transparent=True)
    palette.info.update(extra)
    pixels = np.asarray(to_rgb_image(palette))
    assert (pixels[np.asarray(palette) == 3] == 255).all() and (np.asarray(palette) == 3).any()


def test_the_rule_never_turns_an_image_twice(files):
    with Image.open(files["EXIF-rotated JPEG"]) as opened:
        once = to_rgb_image(opened)
        unturned = to_rgb_image(opened, exif_transpose=False)
    assert once.size == (HEIGHT, WIDTH) and unturned.size == (WIDTH, HEIGHT)
    assert np.array_equal(np.asarray(to_rgb_image(once)), np.asarray(once))
    # The engine's path: the rule without the turn, then its own transpose, then the rule again (SAM, captioner).
    turned = unturned.transpose(Image.Transpose.ROTATE_270)
    assert np.array_equal(np.asarray(to_rgb_image(turned)), np.asarray(once))


def test_a_float_image_with_negative_values_is_refused_naming_it():
    with pytest.raises(ValueError, match="image 4 .*negative"):
        to_rgb_image(Image.fromarray(np.full((2, 2), -1.0, np.float32), mode="F"), index=4)
