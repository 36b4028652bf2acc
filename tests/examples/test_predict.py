"""examples/predict.py: a mistyped model folder or image path reads as a missing path, an empty mask is flagged, and
the panel's caption names the panels it has (issue 20, cases 7 and 8)."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tiny_models.unires import tiny_model_and_processor

REPO = Path(__file__).resolve().parents[2]


def _predict_module():
    spec = importlib.util.spec_from_file_location("examples_predict", REPO / "examples" / "predict.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("predict")
    model, processor = tiny_model_and_processor(seed=3)
    model.save_pretrained(folder / "model")
    processor.save_pretrained(folder / "model")
    image = folder / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 36, 3), dtype=np.uint8)).save(image)
    return folder


def _refused(predict, argv, capsys) -> str:
    """The one-line argument error (exit code 2) of `predict.main(argv)`."""
    with pytest.raises(SystemExit) as exit_info:
        predict.main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_mistyped_model_and_image_paths_read_as_missing_paths(checkpoint, tmp_path, monkeypatch, capsys):
    predict = _predict_module()
    monkeypatch.chdir(checkpoint)
    for typo in ("./modle", str(checkpoint / "modle"), "outputs/demo/modle"):
        assert f"--model: No model folder or file at {typo}" in _refused(
            predict, ["--model", typo, "--image", "photo.png", "the car"], capsys)
    # A bare name may be a Hub id: offline, the message says both readings.
    assert "modle is not a local model folder, and the Hub is offline" in _refused(
        predict, ["--model", "modle", "--image", "photo.png", "the car"], capsys)
    for typo in ("phot.png", "images/photo.png", "photo"):
        error = _refused(predict, ["--model", "model", "--image", typo, "the car", "--output_dir", str(tmp_path)],
                         capsys)
        assert f"--image: No image file at {typo}." in error
        assert "base64" not in error and "padding" not in error


@pytest.mark.parametrize("threshold", ["2", "-0.1", "nan", "half"])
def test_a_threshold_outside_0_1_is_refused_while_parsing(threshold, capsys):
    # Issue 28, case 8: it was a ValueError traceback once the model had loaded.
    predict = _predict_module()
    error = _refused(predict, ["--model", "missing-model-is-not-read", "--image", "x.png", "a", "--threshold",
                               threshold], capsys)
    assert "--threshold" in error and "[0, 1]" in error and "Traceback" not in error


def test_an_empty_mask_is_flagged_and_the_caption_names_two_panels(checkpoint, tmp_path, capsys, monkeypatch):
    drawn = []
    real_text = ImageDraw.ImageDraw.text

    def record(self, xy, text, *args, **kwargs):
        drawn.append(text)
        return real_text(self, xy, text, *args, **kwargs)

    monkeypatch.setattr(ImageDraw.ImageDraw, "text", record)
    predict = _predict_module()
    out = tmp_path / "out"
    # A threshold of 1 leaves every mask empty (no probability is above 1).
    summary = predict.main(["--model", str(checkpoint / "model"), "--image", str(checkpoint / "photo.png"),
                            "the red car", "the wheel", "--threshold", "1.0", "--output_dir", str(out)])
    captured = capsys.readouterr()
    assert captured.out.count("EMPTY MASK") == 2 and "2 of 2 masks are empty" in captured.err
    written = json.loads((out / "predictions.json").read_text())
    assert [row["empty"] for row in written] == [True, True] == [row["empty"] for row in summary]
    legends = [text for text in drawn if text.startswith("left: image")]
    assert len(legends) == 2
    for legend in legends:
        assert "middle" not in legend and "right: prediction (red): EMPTY" in legend
    panel = Image.open(written[0]["panel"])
    assert panel.width == 2 * 36 * 3  # image | prediction, scaled 3x

    drawn.clear()
    summary = predict.main(["--model", str(checkpoint / "model"), "--image", str(checkpoint / "photo.png"),
                            "the red car", "--threshold", "0.0", "--output_dir", str(out)])
    assert summary[0]["empty"] is False and "EMPTY" not in capsys.readouterr().out
    assert [text for text in drawn if text.startswith("left: image")] == ["left: image   right: prediction (red)"]
