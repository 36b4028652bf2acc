"""Issue 28 item 9: the captioner's offline recipe (README, "Dense captioner"): `python -m captioner.tiny` writes a
tiny base model and a COCO Captions folder, and `examples/train_captioner.py` trains on them as on the real ones."""
import json
import runpy
from pathlib import Path

import pytest

from captioner.finetune_data import build_caption_mixture
from captioner.tiny import main as write_tiny

REPO = Path(__file__).resolve().parents[2]


def test_the_tiny_base_and_coco_folder_train_through_the_example(tmp_path, capsys):
    data = tmp_path / "data" / "tiny-captioner"
    write_tiny(["--output_dir", str(data), "--num_images", "6"])
    coco = json.loads((data / "coco" / "annotations" / "captions_train2017.json").read_text())
    assert len(coco["images"]) == 6 and len(coco["annotations"]) == 12
    assert all((data / "coco" / "train2017" / image["file_name"]).is_file() for image in coco["images"])
    rows = build_caption_mixture({"coco_captions": str(data / "coco")}, {}, seed=0, cache_dir=str(tmp_path / "cache"))
    assert len(rows) == 12 and set(rows["granularity"]) == {"image"}  # every caption read, none rejected

    out = tmp_path / "outputs" / "tiny-captioner"
    train_captioner = runpy.run_path(str(REPO / "examples" / "train_captioner.py"))["main"]
    train_captioner(["--base_model", str(data / "base"), "--coco_dir", str(data / "coco"), "--output_dir", str(out),
                     "--max_steps", "2", "--gradient_accumulation_steps", "1"])
    assert "trained 2 steps" in capsys.readouterr().out
    assert (out / "adapter_model.safetensors").is_file() and (out / "README.md").is_file()
    assert (out / "rejects.jsonl").read_text() == ""


def test_it_never_writes_over_a_folder_with_content(tmp_path, capsys):
    (tmp_path / "coco" / "annotations").mkdir(parents=True)  # a real COCO, say
    with pytest.raises(SystemExit) as refused:
        write_tiny(["--output_dir", str(tmp_path)])
    assert refused.value.code == 2
    assert f"{tmp_path / 'coco'} already exists and is not empty" in capsys.readouterr().err
    assert not (tmp_path / "base").exists()
