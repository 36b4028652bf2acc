"""Builder accounting and caching, and `examples/build_dataset.py` rebuilding after an input is repaired.

(The command-line test lives here because it exercises the builders' cache and rejects file; the
example itself only wires them.)
"""

import glob
import importlib.util
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from datasets import load_dataset
from PIL import Image

from dataset_scripts.features import SCHEMA_VERSION
from dataset_scripts.mres_synth.builder import MRESSynth
from dataset_scripts.refcoco import RefCOCO
from dataset_scripts.refcoco_m import RefCOCOm

REPO = Path(__file__).resolve().parents[2]
W, H = 40, 30


def _release(root, repaired=False):
    """A RefCOCO_m release of two images, one referent each; the second image is missing until repaired."""
    for sub in ("images", "masks", "annotations"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    items = []
    for sid, box in ((1, (0, 0, 10, 10)), (2, (20, 5, 30, 25))):
        name = f"COCO_train2014_{sid:012d}.jpg"
        if sid == 1 or repaired:
            Image.new("RGB", (W, H), "blue").save(root / "images" / name)
        mask = np.zeros((H, W), np.uint8)
        mask[box[1]:box[3], box[0]:box[2]] = 255
        Image.fromarray(mask).save(root / "masks" / f"{sid}.png")
        items.append({"img_name": name, "segment_id": sid, "cat": 2, "bbox": list(box),
                      "sentences": [{"idx": 0, "sent_id": sid, "sent": f"car {sid}"}]})
    (root / "annotations" / "val_object_part.json").write_text(json.dumps(items))
    return root


def _cache_rejects(cache):
    return glob.glob(os.path.join(str(cache), "**", "rejects.jsonl"), recursive=True)


def test_schema_version_reaches_every_builder_config(tmp_path):
    builders = [
        RefCOCOm(data_dir=str(tmp_path), cache_dir=str(tmp_path / "c")),
        RefCOCO(config_name="refcocog-umd", data_dir=str(tmp_path), cache_dir=str(tmp_path / "c")),
        MRESSynth(cache_dir=str(tmp_path / "c"), num_train=1),
    ]
    for builder in builders:
        assert str(builder.config.version) == SCHEMA_VERSION == str(builder.info.version)
        assert f"/{SCHEMA_VERSION}" in builder.cache_dir  # a schema bump never reads an old build


def test_rejects_path_and_reuse_are_reported(tmp_path):
    data = _release(tmp_path / "data")
    target = tmp_path / "out" / "rejects.jsonl"
    builder = RefCOCOm(data_dir=str(data), cache_dir=str(tmp_path / "cache"), rejects_path=str(target))
    builder.download_and_prepare()
    assert builder.rejects_path == str(target) and builder.last_summary.startswith("kept 1, fixed 0, skipped 1")
    assert builder.last_summary.endswith(f"(rejects: {target})")
    assert [json.loads(line)["item_id"] for line in target.read_text().splitlines()] == ["val_object_part/2"]
    assert _cache_rejects(tmp_path / "cache") == []

    again = RefCOCOm(data_dir=str(data), cache_dir=str(tmp_path / "cache"))
    again.download_and_prepare()
    assert again.last_summary.startswith("reused the cached build") and "force_redownload" in again.last_summary


def _build_dataset_main():
    spec = importlib.util.spec_from_file_location("examples_build_dataset", REPO / "examples" / "build_dataset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _published_referents(out, cache_dir):
    ds = load_dataset(str(out), split="val_object_part", cache_dir=str(cache_dir))  # a fresh cache per read
    return [r["referent_id"] for row in ds for r in row["referents"]]


def test_cli_rebuilds_after_a_repair_writes_rejects_beside_out_and_shows_the_summary(tmp_path, caplog):
    main = _build_dataset_main()
    data = _release(tmp_path / "data")
    out, cache = tmp_path / "out", tmp_path / "cache"
    argv = ["refcoco-m", "--data_dir", str(data), "--output_dir", str(out), "--cache_dir", str(cache)]
    with caplog.at_level(logging.INFO, logger="dataset_scripts"):
        main(argv)
    assert any(m.startswith("kept 1, fixed 0, skipped 1") for m in caplog.messages)
    records = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert [(r["item_id"], r["reason"].split(":")[0]) for r in records] == [("val_object_part/2", "missing image")]
    assert _cache_rejects(cache) == []
    assert _published_referents(out, tmp_path / "read1") == ["val_object_part/1"]

    _release(data, repaired=True)  # the user repairs the release and runs the same command
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dataset_scripts"):
        main(argv)
    assert any(m.startswith("kept 2, fixed 0, skipped 0") for m in caplog.messages)
    assert (out / "rejects.jsonl").read_text() == ""
    assert _published_referents(out, tmp_path / "read2") == ["val_object_part/1", "val_object_part/2"]


def test_cli_mres_synth_writes_rejects_beside_out(tmp_path, caplog):
    main = _build_dataset_main()
    out = tmp_path / "synth"
    with caplog.at_level(logging.INFO, logger="dataset_scripts"):
        main(["mres-synth", "--output_dir", str(out), "--cache_dir", str(tmp_path / "cache"), "--image_size", "32",
              "--num_train", "2", "--num_validation", "0", "--num_test", "0", "--num_test_unseen", "0"])
    assert (out / "rejects.jsonl").is_file() and _cache_rejects(tmp_path / "cache") == []
    assert any(m.startswith("kept ") for m in caplog.messages)


def test_cli_refuses_a_negative_split_size_while_parsing(tmp_path, capsys):
    main = _build_dataset_main()
    with pytest.raises(SystemExit) as exit_info:
        main(["mres-synth", "--output_dir", str(tmp_path / "synth"), "--num_train", "-5"])
    assert exit_info.value.code == 2
    assert "--num_train: must be >= 0, got -5" in capsys.readouterr().err
    assert not (tmp_path / "synth").exists()
    # and from Python, where datasets sets config overrides after the config's own check ran
    from dataset_scripts.mres_synth import build_mres_synth
    from dataset_scripts.mres_synth.builder import MRESSynth

    with pytest.raises(ValueError, match=r"num_images must be >= 0 per split.*'train': -5"):
        build_mres_synth(str(tmp_path / "py"), num_images={"train": -5})
    with pytest.raises(ValueError, match="num_validation must be >= 0"):
        MRESSynth(cache_dir=str(tmp_path / "cache"), num_validation=-1).download_and_prepare()


def test_cli_names_the_corrupt_split_file_in_one_line(tmp_path, capsys):
    main = _build_dataset_main()
    data = _release(tmp_path / "data")
    split_file = next((data / "annotations").glob("*.json"))
    split_file.write_text('[{"img_name": "x.jpg", ')  # cut short
    with pytest.raises(SystemExit) as exit_info:
        main(["refcoco-m", "--data_dir", str(data), "--output_dir", str(tmp_path / "out"), "--cache_dir", str(tmp_path / "c")])
    message = str(exit_info.value.code)
    assert message.startswith("error: ") and str(split_file) in message and "is not valid JSON" in message
    assert "\n" not in message


def test_cli_push_is_checked_before_building_and_leaves_no_staging_folder(tmp_path, monkeypatch, capsys):
    import huggingface_hub
    import huggingface_hub.constants

    from dataset_scripts.mres_synth.builder import MRESSynth

    main = _build_dataset_main()
    argv = ["mres-synth", "--push_to_hub", "--hub_dataset_id", "org/mres-synth", "--cache_dir", str(tmp_path / "cache"),
            "--image_size", "32", "--num_train", "2", "--num_validation", "0", "--num_test", "0", "--num_test_unseen", "0"]
    with pytest.raises(SystemExit) as exit_info:  # --push_to_hub without a repo: refused while parsing
        main(argv[:1] + ["--push_to_hub"])
    assert exit_info.value.code == 2 and "--hub_dataset_id" in capsys.readouterr().err

    calls = []
    original_prepare = MRESSynth.download_and_prepare
    monkeypatch.setattr(MRESSynth, "download_and_prepare",
                        lambda self, *a, **k: calls.append(("build",)) or original_prepare(self, *a, **k))
    with pytest.raises(SystemExit, match="Hub is switched off"):  # every test runs offline
        main(argv)
    assert calls == []  # nothing was built

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    staged = []
    fakes = {
        "whoami": lambda self: calls.append(("whoami",)) or {"name": "alice", "auth": {"accessToken": {"role": "write"}}},
        "create_repo": lambda self, repo_id, **kw: calls.append(("create_repo", repo_id, kw["repo_type"])),
        "auth_check": lambda self, repo_id, **kw: calls.append(("auth_check", repo_id)),
        "upload_folder": lambda self, **kw: calls.append(("upload", kw["repo_id"], sorted(os.listdir(kw["folder_path"]))))
        or staged.append(kw["folder_path"]),
    }
    for name, fake in fakes.items():
        monkeypatch.setattr(huggingface_hub.HfApi, name, fake)
    monkeypatch.chdir(tmp_path)
    main(argv)
    names = [call[0] for call in calls]
    assert names.index("auth_check") < names.index("build") < names.index("upload")
    assert ("create_repo", "org/mres-synth", "dataset") in calls
    assert calls[-1] == ("upload", "org/mres-synth", ["README.md", "data"])
    assert not os.path.exists(staged[0])  # the temporary folder is gone
    assert "https://huggingface.co/datasets/org/mres-synth" in capsys.readouterr().out


def test_publish_takes_a_folder_as_a_folder(tmp_path, monkeypatch):
    """A relative "name/name" folder is written, never taken for a Hub repo id (it used to be guessed)."""
    from datasets import Dataset, DatasetDict

    from dataset_scripts.publish import publish

    monkeypatch.chdir(tmp_path)
    folder = publish(DatasetDict({"train": Dataset.from_dict({"x": [1, 2]})}), "setup/data")
    assert folder == "setup/data" and (tmp_path / "setup" / "data" / "README.md").is_file()
