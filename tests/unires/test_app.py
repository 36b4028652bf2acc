"""The app's logic without a browser: overlay, legend, downloads, re-thresholding from cached logits, encode-once
caching, bad input as messages, and the command line of examples/app.py."""

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dataset_scripts.masks import decode_mask
from tiny_models.unires import TINY_SENTENCES, tiny_model_and_processor
from unires.app import (
    MAX_IMAGE_SIDE,
    AppInputError,
    Segmenter,
    SessionState,
    UniRESApp,
    legend_html,
    load_image_file,
    overlay_masks,
    parse_expressions,
    write_mask_downloads,
)
from unires.app.examples import write_example_images
from unires.app.render import MASKS_JSON, colour_of

REPO = Path(__file__).resolve().parents[2]
PIXEL_BRANCH = {"pixel_decoder_channels": 4, "decoder_token_stride": 2}  # the demo model's options


class CallCounter:
    """Counts forward calls of a module and the rows (expressions or images) they carried."""

    def __init__(self, module):
        self.calls, self.rows = 0, 0
        self.handle = module.register_forward_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs, output):
        self.calls += 1
        tensors = [value for value in (*args, *kwargs.values()) if isinstance(value, torch.Tensor)]
        self.rows += int(tensors[0].shape[0]) if tensors else 0


@pytest.fixture
def app(tmp_path):
    model, processor = tiny_model_and_processor()
    return UniRESApp(Segmenter(model, processor, device="cpu"), download_dir=tmp_path / "downloads")


def _png(path, width=40, height=24, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)
    return str(path)


def _counters(model):
    # `get_image_embeddings` runs the patch embeddings first; the text tower runs once per set of expressions.
    # Found by class, not by attribute path, so that the count does not depend on where the vision tower sits.
    patch_embeddings = next(module for module in model.modules() if type(module).__name__ == "CLIPVisionEmbeddings")
    return CallCounter(patch_embeddings), CallCounter(model.text_model)


# ---------------------------------------------------------------------------------------------- rendering


def test_overlay_tints_each_mask_in_its_colour_and_keeps_the_size():
    image = Image.new("RGB", (6, 4), (0, 0, 0))
    first = np.zeros((4, 6), bool)
    first[:, :2] = True
    second = np.zeros((4, 6), bool)
    second[:, 1:3] = True  # overlaps the first in column 1: drawn over it
    overlay = np.asarray(overlay_masks(image, [first, second], alpha=0.5)).astype(int)
    assert overlay.shape == (4, 6, 3)
    assert (np.abs(overlay[:, 0] - np.array(colour_of(0)) * 0.5) <= 1).all()
    assert (np.abs(overlay[:, 2] - np.array(colour_of(1)) * 0.5) <= 1).all()
    assert not (overlay[:, 1] == overlay[:, 0]).all()  # the second colour went over the first
    assert (overlay[:, 3:] == 0).all()
    assert colour_of(0) != colour_of(1)
    with pytest.raises(ValueError, match="mask 0 has shape"):
        overlay_masks(image, [np.zeros((6, 4), bool)])


def test_legend_names_every_expression_with_its_colour_and_score():
    masks = [np.ones((2, 2), bool), np.zeros((2, 2), bool)]
    legend = legend_html(["the red car", "the <b>wheel</b>"], [0.87, 0.12], masks)
    assert legend.index("the red car") < legend.index("the &lt;b&gt;wheel&lt;/b&gt;")
    assert "<b>" not in legend  # the visitor's text is escaped
    assert "rgb({},{},{})".format(*colour_of(0)) in legend and "rgb({},{},{})".format(*colour_of(1)) in legend
    assert "score 0.87 · 100.0% of the image" in legend and "score 0.12 · 0.0% of the image — empty mask" in legend
    with pytest.raises(ValueError, match="2 expressions, 1 scores"):
        legend_html(["a", "b"], [0.5], masks)


def test_downloads_hold_a_png_per_expression_and_the_rles(tmp_path):
    rng = np.random.default_rng(0)
    masks = [rng.random((5, 7)) > 0.5, np.zeros((5, 7), bool)]
    paths = write_mask_downloads(tmp_path, ["the red car", "its wheel!"], masks, [0.9, 0.2], threshold=0.4)
    assert [path.name for path in paths] == ["00-the-red-car.png", "01-its-wheel.png", MASKS_JSON]
    for path, mask in zip(paths, masks):
        assert np.array_equal(np.asarray(Image.open(path)) == 255, mask)
    summary = json.loads(paths[-1].read_text())
    assert summary["threshold"] == 0.4 and summary["image_size"] == [5, 7]
    assert [record["text"] for record in summary["masks"]] == ["the red car", "its wheel!"]
    for record, mask in zip(summary["masks"], masks):
        assert np.array_equal(decode_mask(record["rle"]), mask)
    assert summary["masks"][1]["png"] == "01-its-wheel.png" and summary["masks"][0]["score"] == 0.9


# ---------------------------------------------------------------------------------------------- caching


@pytest.mark.parametrize("overrides", [{}, PIXEL_BRANCH], ids=["paper-decoder", "pixel-branch"])
def test_cached_encoding_gives_the_full_forward_masks(tmp_path, overrides):
    model, processor = tiny_model_and_processor(**overrides)
    app = UniRESApp(Segmenter(model, processor, device="cpu"), download_dir=tmp_path / "downloads")
    path = _png(tmp_path / "image.png")
    expressions = TINY_SENTENCES[:3]
    output = app.segment(path, "\n".join(expressions), None, SessionState())
    assert output.message == ""
    # The same masks and scores as one plain forward pass on the image and the expressions.
    inputs = processor(images=Image.open(path), text=expressions, return_tensors="pt")
    with torch.no_grad():
        logits = model(pixel_values=inputs["pixel_values"], input_ids=inputs["input_ids"],
                       attention_mask=inputs["attention_mask"]).logits
    threshold = model.config.mask_threshold
    masks, scores = processor.post_process_masks(logits, [(24, 40)], threshold=threshold, return_scores=True)
    summary = json.loads(Path(output.downloads[-1]).read_text())
    for record, mask, score in zip(summary["masks"], masks, scores):
        assert np.array_equal(decode_mask(record["rle"]), mask)
        assert record["score"] == pytest.approx(score, abs=1e-5)
    assert output.overlay.size == (40, 24)


def test_second_set_of_expressions_runs_no_image_encoding(app, tmp_path):
    path = _png(tmp_path / "image.png")
    images, texts = _counters(app.segmenter.model)
    state = app.load_image(path, SessionState()).state
    assert (images.calls, texts.calls) == (1, 0)

    first = app.segment(path, "\n".join(TINY_SENTENCES[:2]), 0.35, state)
    assert first.message == "" and (images.calls, texts.rows) == (1, 2)
    # A second set on the same image: one expression kept, two new; only the new ones reach the text tower.
    second = app.segment(path, "\n".join([TINY_SENTENCES[1], TINY_SENTENCES[2], TINY_SENTENCES[3]]), 0.35, state)
    assert second.message == "" and images.calls == 1 and (texts.calls, texts.rows) == (2, 4)
    assert "2 of 3 expressions new" in second.timings and "encode image (cached" in second.timings
    assert [name for name, _ in second.steps][0] == "check image"
    assert second.state.expressions == TINY_SENTENCES[1:4]

    # A new upload (different bytes) is encoded again and forgets the old logits.
    other = _png(tmp_path / "other.png", seed=1)
    third = app.segment(other, TINY_SENTENCES[1], 0.35, state)
    assert third.message == "" and images.calls == 2 and texts.rows == 5


def test_same_file_uploaded_again_is_not_re_encoded(app, tmp_path):
    path = _png(tmp_path / "image.png")
    copy = tmp_path / "copy.png"
    copy.write_bytes(Path(path).read_bytes())  # Gradio gives every upload its own temporary name
    images, _ = _counters(app.segmenter.model)
    state = app.load_image(path, SessionState()).state
    again = app.load_image(str(copy), state)
    assert images.calls == 1 and "already encoded" in again.timings


def test_rethreshold_uses_cached_logits_and_runs_no_model(app, tmp_path):
    path = _png(tmp_path / "image.png")
    expressions = TINY_SENTENCES[:2]
    state = app.segment(path, "\n".join(expressions), 0.35, SessionState()).state
    cached = state.current_logits().clone()
    forward_calls = CallCounter(app.segmenter.model)
    images, texts = _counters(app.segmenter.model)

    results = {}
    for threshold in (0.2, 0.5, 0.8):
        output = app.rethreshold(threshold, state)
        assert output.message == "" and f"masks at threshold {threshold:.2f}" in output.timings
        summary = json.loads(Path(output.downloads[-1]).read_text())
        assert summary["threshold"] == threshold
        results[threshold] = [decode_mask(record["rle"]) for record in summary["masks"]]
        expected = app.segmenter.processor.post_process_masks(cached, [(24, 40)], threshold=threshold)
        assert all(np.array_equal(got, want) for got, want in zip(results[threshold], expected))
    assert (forward_calls.calls, images.calls, texts.calls) == (0, 0, 0)
    # A higher threshold keeps a subset of the pixels, and the thresholds give different masks here.
    for low, high in ((0.2, 0.5), (0.5, 0.8)):
        assert all((~h | l).all() for l, h in zip(results[low], results[high]))
    assert any(not np.array_equal(a, b) for a, b in zip(results[0.2], results[0.8]))


def test_rethreshold_before_any_result_asks_to_segment_first(app):
    assert "Segment first" in app.rethreshold(0.5, SessionState()).message


# ---------------------------------------------------------------------------------------------- bad input


def test_bad_input_becomes_a_message_on_the_page(app, tmp_path):
    path = _png(tmp_path / "image.png")
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("this is text, not a PNG")
    cases = {
        "no image": (None, "the red car", "No image"),
        "no expression": (path, "", "No expression"),
        "only spaces": (path, "   \n \t \n", "only spaces"),
        "not an image": (str(not_an_image), "the red car", "notes.png is not an image"),
        "too many": (path, "\n".join(f"thing {i}" for i in range(17)), "at most 16"),
    }
    for name, (file_path, text, wanted) in cases.items():
        output = app.segment(file_path, text, 0.35, SessionState())
        assert output.message.startswith("⚠️") and wanted in output.message, name
        assert output.overlay is None and output.downloads == [], name
    loaded = app.load_image(str(not_an_image), SessionState())
    assert "notes.png is not an image" in loaded.message and loaded.state.encoded is None


def test_unexpected_failure_is_a_one_line_message(app, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("the decoder broke")

    monkeypatch.setattr(app.segmenter, "decode", broken)
    output = app.segment(_png(tmp_path / "image.png"), "the red car", 0.35, SessionState())
    assert output.message == "⚠️ Something went wrong: RuntimeError: the decoder broke"


def test_huge_image_is_downscaled_with_a_notice(app, tmp_path):
    path = tmp_path / "huge.png"
    huge = Image.new("1", (10_000, 10_000), 0)  # 1-bit: 12 MB in memory, a small PNG
    huge.paste(1, (0, 0, 5_000, 10_000))
    huge.save(path)
    del huge
    output = app.load_image(str(path), SessionState())
    assert output.preview.size == (MAX_IMAGE_SIDE, MAX_IMAGE_SIDE)
    assert "10000 × 10000" in output.message and f"{MAX_IMAGE_SIDE} × {MAX_IMAGE_SIDE}" in output.message
    # The content survived the downscale: left half white, right half black (resampling blurs the edge).
    preview = np.asarray(output.preview.convert("L"))
    assert preview[:, : MAX_IMAGE_SIDE // 2 - 8].min() >= 250 and preview[:, MAX_IMAGE_SIDE // 2 + 8 :].max() <= 5
    result = app.segment(str(path), "the red car", 0.35, output.state)
    assert result.overlay.size == (MAX_IMAGE_SIDE, MAX_IMAGE_SIDE) and "encode image (cached" in result.timings
    # Case 8 of issue 20: the masks never come without the notice: on Segment (cached encoding or not), and on a
    # new threshold.
    assert result.message == output.message
    assert app.rethreshold(0.5, result.state).message == output.message
    fresh = app.segment(str(path), "the red car", 0.35, SessionState())
    assert fresh.message == output.message and fresh.overlay is not None
    # A smaller image afterwards drops the notice.
    assert app.load_image(_png(tmp_path / "small.png"), result.state).message == ""


def test_image_beyond_the_decompression_limit_is_refused(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (20_000, 10_000), 0).save(path)  # 200 megapixels: past PIL's 179-megapixel limit
    with pytest.raises(AppInputError, match="bomb.png is too large"):
        load_image_file(path)


def test_expressions_are_one_per_line_and_stripped():
    assert parse_expressions("  the red car \n\n the wheel of the bus\r\n") == ["the red car", "the wheel of the bus"]
    for text in (None, "", " ", "\n\t\n"):
        with pytest.raises(AppInputError):
            parse_expressions(text)


# ---------------------------------------------------------------------------------------------- examples, CLI


def test_example_images_are_mres_synth_scenes_with_an_object_and_a_part(tmp_path):
    examples = write_example_images(tmp_path, num_examples=2, image_size=64)
    assert len(examples) == 2
    for path, expressions in examples:
        assert Image.open(path).size == (64, 64)
        lines = expressions.splitlines()
        assert len(lines) == 2 and all(line.strip() for line in lines)
    assert examples[0][0] != examples[1][0]


def _app_script():
    spec = importlib.util.spec_from_file_location("examples_app", REPO / "examples" / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_app_script_defaults_and_missing_model_folder(tmp_path, monkeypatch, capsys):
    script = _app_script()
    monkeypatch.delenv("UNIRES_MODEL", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    args = script.parse_args([])
    assert (args.model, args.host, args.port) == ("outputs/demo/model", "127.0.0.1", 7860)
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--model", str(tmp_path / "missing")])
    assert exit_info.value.code == 2
    assert re.search("--model: No model folder or file at .*missing.*Run `make demo` first", capsys.readouterr().err)


def test_a_mistyped_model_folder_reads_as_a_missing_path(tmp_path, monkeypatch, capsys):
    from unires.evaluation import run_evaluation

    # Case 7 of issue 20: a typo in a local path is a missing path, not a Hub connection error.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs" / "demo").mkdir(parents=True)
    for typo in ("outputs/demo/modle", str(tmp_path / "nothing-here"), "./model"):
        with pytest.raises(FileNotFoundError, match=f"No model folder or file at {typo}"):
            Segmenter.from_pretrained(typo)
        with pytest.raises(SystemExit) as exit_info:
            _app_script().main(["--model", typo])
        assert exit_info.value.code == 2 and f"No model folder or file at {typo}" in capsys.readouterr().err
        with pytest.raises(FileNotFoundError, match=f"No model folder or file at {typo}"):
            run_evaluation(typo, "unires", str(tmp_path), ["validation"])


def test_page_builds_with_gradio(app):
    gr = pytest.importorskip("gradio")
    blocks = app.build()
    assert isinstance(blocks, gr.Blocks)
    ids = {block.elem_id for block in blocks.blocks.values()}
    assert {"image-file", "expressions", "threshold", "segment-button", "overlay", "legend", "timings"} <= ids


@pytest.mark.parametrize("space_id", [None, "org/unires-demo"])
def test_model_card_links_to_the_app(tmp_path, space_id):
    from unires.training import DataArguments, UniRESTrainingArguments
    from unires.training.model_card import write_model_card

    model, _ = tiny_model_and_processor()
    card = write_model_card(
        tmp_path, config=model.config, training_args=UniRESTrainingArguments(output_dir=str(tmp_path)),
        data_args=DataArguments(dataset=["data/mres-synth"]), model_id="org/unires", space_id=space_id,
    )
    section = card[card.index("## Try it in a browser") : card.index("## Model")]
    assert "python examples/app.py --model org/unires" in section
    assert ("https://huggingface.co/spaces/org/unires-demo" in section) == (space_id is not None)
