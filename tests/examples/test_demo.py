"""`make demo`'s script end to end on a few images and steps, and its config overrides; the ablation script."""

import importlib.util
import json
from pathlib import Path

from transformers import AutoModel

from modeling_unires.fast_inference_unires import enable_fast_inference

from unires.demo import DEMO_IMAGE_SIZE

REPO = Path(__file__).resolve().parents[2]


def _demo_module(name="demo"):
    spec = importlib.util.spec_from_file_location(f"examples_{name}", REPO / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_writes_metrics_model_and_overlays(tmp_path):
    demo = _demo_module()
    metrics = demo.main(["--output_dir", str(tmp_path), "--num_train", "24", "--num_eval", "6", "--max_steps", "3",
                         "--num_overlays", "2", "--config_overrides", '{"decoder_intermediate_size": 128}'])
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["splits"] == json.loads(json.dumps(metrics["splits"]))
    for split in ("validation", "test_unseen"):
        assert set(written["splits"][split]) == {"unires", "full_image", "largest_object_box"}
        for table in written["splits"][split].values():
            assert 0.0 <= table["object"]["mIoU"] <= 100.0 and table["part"]["count"] > 0
        assert len(list((tmp_path / "overlays" / split).glob("*.png"))) == 2
    assert written["training"]["referents_per_image"] == 16  # the demo's batch shape: 4 images x 16 expressions
    assert written["training"]["steps"] == 3 and written["training"]["config_overrides"] == {
        "decoder_intermediate_size": 128}
    assert written["options"]["threshold"] == 0.35
    assert set(written["timings_seconds"]) >= {"generate MRES-Synth", "train", "evaluate"}

    card = (tmp_path / "model" / "README.md").read_text()
    assert "tokens pooled 2×2, 16-channel pixel branch" in card and "| validation | object |" in card
    assert "no position encoding" not in card  # the decoder keeps the paper model's position encoding
    model = AutoModel.from_pretrained(tmp_path / "model")
    # The demo's recipe (pooled decoder tokens, pixel branch) with the override applied on top.
    assert (model.config.decoder_token_stride, model.config.pixel_decoder_channels) == (2, 16)
    assert model.config.decoder_position_encoding == "sine"
    assert model.config.decoder_intermediate_size == 128 and model.config.image_size == DEMO_IMAGE_SIZE


def test_ablate_evaluates_a_model_without_group_tokens(tmp_path, capsys, monkeypatch):
    """README's `ablate.py --settings full no_group_tokens` died in evaluation (KeyError 'group_tokens') once an
    image had more expressions than one inference pass holds: 8 per pass here, so that every image takes several
    (the evaluator runs the fast inference forwards on a CPU, which split expressions into passes)."""
    passes = []

    def eight_per_pass(model):
        passes.append((model.config.use_low_group_tokens, model.config.use_high_group_tokens))
        return enable_fast_inference(model, max_expressions_per_pass=8)

    monkeypatch.setattr("unires.evaluation.segmenters.unires.enable_fast_inference", eight_per_pass)
    # The budget probe times 10 steps even for a fixed --max_steps: not what this test is about.
    monkeypatch.setattr("unires.demo.measure_step_seconds", lambda *args, **kwargs: 1.0)
    results = _demo_module("ablate").main(["--output_dir", str(tmp_path), "--settings", "no_group_tokens",
                                           "--num_train", "8", "--num_eval", "2", "--max_steps", "1"])
    written = json.loads((tmp_path / "ablation.json").read_text())
    assert list(written) == list(results) == ["no_group_tokens"]
    for split in ("validation", "test_unseen"):
        assert 0.0 <= written["no_group_tokens"][split]["object"]["mIoU"] <= 100.0
    assert "| no_group_tokens | object |" in capsys.readouterr().out
    assert passes and set(passes) == {(False, False)}  # evaluated in passes of 8, no group tokens


def test_demo_run_again_into_the_same_folder_replaces_its_model(tmp_path):
    # The demo saves its model without checkpoints (save_steps=0): the output-folder rule counts such a folder as a
    # finished run, and `make demo` run a second time must replace it rather than stop.
    demo = _demo_module()
    args = ["--output_dir", str(tmp_path), "--num_train", "8", "--num_eval", "2", "--num_overlays", "0",
            "--config_overrides", '{"decoder_intermediate_size": 64}']
    demo.main(args + ["--max_steps", "2"])
    metrics = demo.main(args + ["--max_steps", "1"])
    assert metrics["training"]["steps"] == 1
    assert json.loads((tmp_path / "metrics.json").read_text())["training"]["steps"] == 1
