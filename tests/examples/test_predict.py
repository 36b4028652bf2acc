"""examples/predict.py: a mistyped model folder or image path reads as a missing path, an empty mask is flagged, and
the panel's caption names the panels it has (issue 20, cases 7 and 8)."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from modeling_unires.testing_utils import tiny_model_and_processor

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


def test_mistyped_model_and_image_paths_read_as_missing_paths(checkpoint, tmp_path, monkeypatch):
    predict = _predict_module()
    monkeypatch.chdir(checkpoint)
    for typo in ("./modle", str(checkpoint / "modle"), "outputs/demo/modle"):
        with pytest.raises(SystemExit, match=f"No model folder or file at {typo}"):
            predict.main(["--model", typo, "--image", "photo.png", "the car"])
    # A bare name may be a Hub id: offline, the message says both readings.
    with pytest.raises(SystemExit, match="modle is not a local model folder, and the Hub is offline"):
        predict.main(["--model", "modle", "--image", "photo.png", "the car"])
    for typo in ("phot.png", "images/photo.png", "photo"):
        with pytest.raises(SystemExit, match=f"No image file at '{typo}'") as error:
            predict.main(["--model", "model", "--image", typo, "the car", "--output_dir", str(tmp_path)])
        assert "base64" not in str(error.value) and "padding" not in str(error.value)


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
