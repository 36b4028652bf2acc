"""Fine-tuning a UniRES checkpoint on one's own folder, three ways (`--finetune full|frozen_towers|lora`).

A tiny UniRES saved to a folder is the checkpoint; a folder of one's own data (metadata.jsonl, ImageFolder layout)
is the data. Each way trains through `examples/train.py` and the result is scored by `examples/evaluate_model.py
--dataset <folder>`; the LoRA adapter is loaded as peft users do (`PeftModel.from_pretrained`, `merge_and_unload`).
"""

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from safetensors.torch import load_file

from modeling_unires import UniRESModel, UniRESProcessor
from tiny_models.unires import tiny_model_and_processor
from unires.training import DataArguments, ModelArguments, UniRESTrainer, UniRESTrainingArguments, run_training
from unires.training.cli import main as train_main
from unires.training.finetune import DEFAULT_LORA_TARGET_MODULES, TOWER_PREFIXES, add_lora, count_parameters

peft = pytest.importorskip("peft")

REPO = Path(__file__).resolve().parents[2]
SIZE = 48
COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 180, 30), "yellow": (230, 220, 20)}


def _rle(mask):
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode()}


def write_own_folder(root: Path, num_train: int = 4, num_validation: int = 2) -> Path:
    """my_folder/{train,validation}/: images of one coloured car each, its mask a PNG, its wheel an RLE part."""
    for split, count in (("train", num_train), ("validation", num_validation)):
        folder = root / split
        (folder / "masks").mkdir(parents=True, exist_ok=True)
        rows = []
        for index in range(count):
            name = list(COLOURS)[index % len(COLOURS)]
            x0, y0 = 4 + 3 * index, 6 + 2 * index
            body = np.zeros((SIZE, SIZE), np.uint8)
            body[y0:y0 + 20, x0:x0 + 26] = 1
            wheel = np.zeros((SIZE, SIZE), np.uint8)
            wheel[y0 + 14:y0 + 20, x0 + 2:x0 + 8] = 1
            image = np.full((SIZE, SIZE, 3), 200, np.uint8)
            image[body.astype(bool)] = COLOURS[name]
            image[wheel.astype(bool)] = (10, 10, 10)
            Image.fromarray(image).save(folder / f"{index}.png")
            Image.fromarray(body * 255).save(folder / "masks" / f"{index}.png")
            rows.append({"file_name": f"{index}.png", "referents": [
                {"id": "car", "granularity": "object", "category": "car",
                 "sentences": [f"the {name} car", "the car on the left"], "mask": f"masks/{index}.png"},
                {"id": "wheel", "granularity": "part", "category": "wheel", "parent": "car",
                 "sentences": [f"the left wheel of the {name} car"], "mask": _rle(wheel)}]})
        with open(folder / "metadata.jsonl", "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)
    return root


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    model, processor = tiny_model_and_processor(image_size=SIZE, pixel_decoder_channels=4)
    model.save_pretrained(root / "base")
    processor.save_pretrained(root / "base")
    return {"root": root, "base": root / "base", "data": write_own_folder(root / "my_folder"),
            "cache": root / "cache"}


def _train_argv(setup, output_dir, way, *extra):
    return ["--model_name_or_path", str(setup["base"]), "--dataset", str(setup["data"]), "--finetune", way,
            "--output_dir", str(output_dir), "--per_device_train_batch_size", "2", "--referents_per_image", "2",
            "--learning_rate", "1e-2", "--max_steps", "3", "--logging_steps", "1", "--save_steps", "0",
            "--report_to", "none", "--disable_progress_bar", "--do_final_eval", "false", "--seed", "3", *extra]


def _args(setup, output_dir, way, **overrides):
    model_args = ModelArguments(model_name_or_path=str(setup["base"]), finetune=way)
    data_args = DataArguments(dataset=[str(setup["data"])], referents_per_image=2, max_eval_images=2)
    values = dict(output_dir=str(output_dir), per_device_train_batch_size=2, learning_rate=1e-2, max_steps=4,
                  logging_steps=1, save_steps=0, report_to="none", disable_progress_bar=True, do_final_eval=False,
                  seed=3)
    values.update(overrides)
    return model_args, data_args, UniRESTrainingArguments(**values)


def _evaluate(model_folder, data_folder, output, cache):
    spec = importlib.util.spec_from_file_location("examples_evaluate_finetune", REPO / "examples" / "evaluate_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--model", str(model_folder), "--dataset", str(data_folder), "--split", "validation", "--device",
                 "cpu", "--no_progress", "--cache_dir", str(cache), "--output", str(output)])
    return json.loads(Path(output).read_text())


def _is_tower(name: str) -> bool:
    return name.startswith(TOWER_PREFIXES)


def _lora_parameter_count(model, r: int) -> int:
    """What LoRA of rank r adds on the default targets: r x (in + out) per linear layer of the decoder and mask head."""
    count = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.startswith(("decoder.", "mask_head.")):
            count += r * (module.in_features + module.out_features)
    return count


@pytest.mark.parametrize("way", ["full", "frozen_towers", "lora"])
def test_each_way_trains_what_it_says_on_an_own_folder_and_is_evaluated(setup, tmp_path, way):
    base = {k: v.clone() for k, v in UniRESModel.from_pretrained(setup["base"]).state_dict().items()}
    out = tmp_path / way
    train_main(_train_argv(setup, out, way))

    if way == "lora":
        assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in out.iterdir()}
        assert not (out / "model.safetensors").exists()
        adapter = load_file(out / "adapter_model.safetensors")
        assert adapter and all("lora_" in name for name in adapter)
        tuned = peft.PeftModel.from_pretrained(UniRESModel.from_pretrained(setup["base"]), out)
        trainable, _ = count_parameters(peft.PeftModel.from_pretrained(
            UniRESModel.from_pretrained(setup["base"]), out, is_trainable=True))
        assert trainable == _lora_parameter_count(UniRESModel.from_pretrained(setup["base"]), r=8)
        assert sum(v.numel() for v in adapter.values()) == trainable
        # LoRA's B starts at zero: trained, it moved
        assert any(v.abs().sum() > 0 for name, v in adapter.items() if "lora_B" in name)
        weights = {k: v for k, v in tuned.merge_and_unload().state_dict().items()}
    else:
        assert not (out / "adapter_config.json").exists()
        weights = UniRESModel.from_pretrained(out).state_dict()

    towers = [name for name in base if _is_tower(name)]
    rest = [name for name in base if not _is_tower(name)]
    towers_moved = [name for name in towers if not torch.equal(weights[name], base[name])]
    rest_moved = [name for name in rest if not torch.equal(weights[name], base[name])]
    if way == "full":
        assert towers_moved and rest_moved
    else:  # the towers are exactly as they came; the decoder learned
        assert towers_moved == [] and rest_moved
    if way == "lora":  # only the layers LoRA wraps change when merged: norms, group tokens, biases stay
        assert all(name.endswith(".weight") and name.startswith(("decoder.", "mask_head.")) for name in rest_moved)

    result = _evaluate(out, setup["data"], tmp_path / f"{way}.json", setup["cache"])
    entry = result["splits"]["validation"]
    assert entry["dataset"]["builder"] == "OwnData"
    assert entry["metrics"]["object+part"]["count"] == 6 and 0 <= entry["metrics"]["object+part"]["mIoU"] <= 100


def test_trainable_parameters_of_each_way(setup):
    def trainable(way, **lora):
        model = UniRESModel.from_pretrained(setup["base"])
        from unires.training.finetune import apply_finetune

        args = ModelArguments(model_name_or_path=str(setup["base"]), finetune=way, **lora)
        return count_parameters(apply_finetune(model, args))

    model = UniRESModel.from_pretrained(setup["base"])
    total = sum(p.numel() for p in model.parameters())
    towers = sum(p.numel() for n, p in model.named_parameters() if _is_tower(n))
    assert trainable("full") == (total, total)
    assert trainable("frozen_towers") == (total - towers, total)
    lora_trainable, lora_total = trainable("lora", lora_r=4)
    assert lora_trainable == _lora_parameter_count(model, r=4)
    assert lora_total == total + lora_trainable
    # a narrower choice of targets trains fewer
    assert trainable("lora", lora_r=4, lora_target_modules="q_proj,v_proj")[0] < lora_trainable


def test_lora_never_reaches_the_clip_towers_and_unknown_targets_are_named(setup):
    model = UniRESModel.from_pretrained(setup["base"])
    wrapped = add_lora(model, r=2, alpha=4, dropout=0.0)
    lora_modules = {name.split(".lora_")[0] for name, _ in wrapped.named_parameters() if ".lora_" in name}
    assert lora_modules and not any(_is_tower(name.replace("base_model.model.", "")) for name in lora_modules)
    # every linear layer of the decoder and the mask head is a default target
    linear = {f"base_model.model.{name}" for name, module in UniRESModel.from_pretrained(setup["base"]).named_modules()
              if isinstance(module, torch.nn.Linear) and name.startswith(("decoder.", "mask_head."))}
    assert lora_modules == linear
    assert "pixel_filter" in DEFAULT_LORA_TARGET_MODULES
    assert all(not p.requires_grad for n, p in wrapped.named_parameters() if ".lora_" not in n)
    with pytest.raises(ValueError, match="no_such_layer"):
        add_lora(UniRESModel.from_pretrained(setup["base"]), target_modules=["q_proj", "no_such_layer"])


def test_lora_without_a_checkpoint_base_is_refused_before_the_folder_is_claimed(setup, tmp_path):
    out = tmp_path / "lora"
    model_args, data_args, training_args = _args(setup, out, "lora")
    model_args.model_name_or_path, model_args.config_name = None, str(setup["base"])
    with pytest.raises(ValueError, match="--model_name_or_path"):
        run_training(model_args, data_args, training_args)
    assert not out.exists()
    with pytest.raises(ValueError, match="--finetune"):
        ModelArguments(model_name_or_path=str(setup["base"]), finetune="adapters")
    # A push would upload an adapter naming a folder of this machine as its base: refused before anything is claimed.
    model_args, data_args, training_args = _args(setup, out, "lora")
    training_args.push_to_hub, training_args.hub_model_id = True, "org/my-lora"
    with pytest.raises(ValueError, match="would name the local folder .* as its base"):
        run_training(model_args, data_args, training_args)
    assert not out.exists()


def test_lora_checkpoint_holds_only_the_adapter_and_resumes_exactly(setup, tmp_path, monkeypatch):
    # 4 images / batch 2 = 2 batches an epoch: the crash at step 3 is mid-epoch; dropout on (its RNG is restored)
    run_training(*_args(setup, tmp_path / "straight", "lora", max_steps=5))

    original_save = UniRESTrainer.save_checkpoint

    def save_then_crash(self):
        folder = original_save(self)
        raise KeyboardInterrupt(f"simulated crash after writing {folder}")

    monkeypatch.setattr(UniRESTrainer, "save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        run_training(*_args(setup, tmp_path / "crashed", "lora", max_steps=5, save_steps=3))
    monkeypatch.setattr(UniRESTrainer, "save_checkpoint", original_save)
    checkpoint = tmp_path / "crashed" / "checkpoint-3"
    saved = load_file(checkpoint / "model.safetensors")
    # the adapter's weights only: no second copy of the frozen base model
    assert saved and all(".lora_" in name for name in saved)
    base_count = sum(p.numel() for p in UniRESModel.from_pretrained(setup["base"]).parameters())
    assert sum(v.numel() for v in saved.values()) == _lora_parameter_count(
        UniRESModel.from_pretrained(setup["base"]), r=8) < base_count

    trainer, _ = run_training(*_args(setup, tmp_path / "crashed", "lora", max_steps=5,
                                     resume_from_checkpoint="latest"))
    assert trainer.state.global_step == 5
    straight = load_file(tmp_path / "straight" / "adapter_model.safetensors")
    resumed = load_file(tmp_path / "crashed" / "adapter_model.safetensors")
    assert straight.keys() == resumed.keys()
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=1e-5, atol=1e-6, msg=name)
    # the resumed half trained on from the checkpoint (peft's saved names drop the adapter's name, "default")
    at_crash = {name.replace(".default.weight", ".weight"): value for name, value in saved.items()}
    assert at_crash.keys() == resumed.keys()
    assert any(not torch.allclose(at_crash[name], resumed[name]) for name in resumed)


def test_saved_adapter_loads_with_peft_and_merges_to_the_same_logits(setup, tmp_path):
    out = tmp_path / "lora"
    run_training(*_args(setup, out, "lora", max_steps=3))
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(setup["base"].resolve())
    card = (out / "README.md").read_text()
    assert "library_name: peft" in card and str(setup["base"].resolve()) in card and "PeftModel.from_pretrained" in card

    processor = UniRESProcessor.from_pretrained(out)
    image = Image.open(setup["data"] / "validation" / "0.png")
    inputs = processor(images=[image], text=[["the red car", "the left wheel of the red car"]])
    inputs.pop("original_sizes")
    base = UniRESModel.from_pretrained(setup["base"]).eval()
    tuned = peft.PeftModel.from_pretrained(UniRESModel.from_pretrained(setup["base"]), out).eval()
    with torch.no_grad():
        base_logits = base(**inputs).logits
        unmerged = tuned(**inputs).logits
        merged_model = tuned.merge_and_unload()
        merged = merged_model(**inputs).logits
    assert type(merged_model) is UniRESModel
    assert not torch.allclose(unmerged, base_logits, atol=1e-4)  # the adapter changes the masks
    torch.testing.assert_close(merged, unmerged, rtol=1e-4, atol=1e-5)

    # the evaluator's loader: base + adapter, merged, with the adapter's processor
    from unires.evaluation.segmenters.unires import UniRESSegmenter, load_unires_model

    loaded, loaded_processor = load_unires_model(str(out))
    assert type(loaded) is UniRESModel and loaded_processor.tokenizer is not None
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(**inputs).logits, unmerged, rtol=1e-4, atol=1e-5)
    assert type(UniRESSegmenter.from_pretrained(str(out), device="cpu").model) is UniRESModel

    # the app loads it the same way (merged), and refuses int8 on an adapter naming what to do instead
    from modeling_unires.quantization_unires import quantization_config
    from unires.app.session import Segmenter as AppSegmenter

    app_model = AppSegmenter.from_pretrained(str(out), device="cpu").model
    with torch.no_grad():
        torch.testing.assert_close(app_model.eval()(**inputs).logits, unmerged, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="is a LoRA adapter: int8 loads a saved model; merge the adapter first"):
        AppSegmenter.from_pretrained(str(out), quantization_config=quantization_config("int8"))


def test_overwrite_rule_knows_an_adapter_folder_is_a_finished_run(setup, tmp_path):
    out = tmp_path / "lora"
    run_training(*_args(setup, out, "lora", max_steps=1))
    with pytest.raises(FileExistsError) as info:
        run_training(*_args(setup, out, "lora", max_steps=1))
    message = str(info.value)
    assert "adapter_config.json" in message and "--overwrite_output_dir" in message
    # the CLI says the same
    with pytest.raises(FileExistsError, match="--overwrite_output_dir"):
        train_main(_train_argv(setup, out, "full"))
    # overwritten by a full fine-tune: the folder then holds one model, not an adapter beside it
    run_training(*_args(setup, out, "full", max_steps=1, overwrite_output_dir=True))
    names = {p.name for p in out.iterdir()}
    assert "model.safetensors" in names and not names & {"adapter_config.json", "adapter_model.safetensors"}
    assert type(UniRESModel.from_pretrained(out)) is UniRESModel


def test_a_lora_run_pushes_the_adapter_with_its_processor_and_card(setup, tmp_path, monkeypatch):
    import huggingface_hub

    import run_support.run_claim as run_claim
    from run_support.hub import files_to_upload
    from unires.training.hub import PUSH_IGNORE_PATTERNS

    uploads = []
    monkeypatch.setattr(run_claim, "check_push_access", lambda repo_id, *args, **kwargs: repo_id)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", lambda self, **kwargs: uploads.append(kwargs))
    out = tmp_path / "lora"
    model_args, data_args, training_args = _args(setup, out, "lora", max_steps=2, save_steps=2, push_to_hub=True,
                                                 hub_model_id="org/unires-lora", do_final_eval=True)
    model_args.base_model_id = "org/unires-base"  # the base is a local copy: the pushed adapter names its Hub id
    _, metrics = run_training(model_args, data_args, training_args)
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == "org/unires-base"
    card = (out / "README.md").read_text()
    assert "org/unires-base" in card and str(setup["base"]) not in card  # the card names the Hub id, not the folder
    assert metrics["object+part"]["count"] > 0  # the trainer's own evaluation runs the unmerged peft model
    assert len(uploads) == 1 and uploads[0]["repo_id"] == "org/unires-lora"
    uploaded = files_to_upload(uploads[0]["folder_path"], ignore_patterns=uploads[0]["ignore_patterns"])
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "processor_config.json"} <= set(uploaded)
    assert not any(name.startswith("checkpoint-") or name == "model.safetensors" for name in uploaded)
    assert uploads[0]["ignore_patterns"] == PUSH_IGNORE_PATTERNS
    assert "# UniRES LoRA adapter (org/unires-lora)" in (out / "README.md").read_text()
