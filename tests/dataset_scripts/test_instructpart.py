"""InstructPart from a fixture shaped like the release (zifuwan/InstructPart README): ``test/data_test.json``,
``images/{stem}-{object}-{part}.jpg`` per sample (spaces as ``_``), ``masks/{sample}.png`` (0/255), six
instructions per part of which the fifth is the plain "part of object" form."""

import json
import os

import numpy as np
import pytest
from datasets import load_dataset
from PIL import Image

from run_support.cli import root_cause
from dataset_scripts.instructpart import InstructPart, build_instructpart, sample_name
from dataset_scripts.masks import decode_mask

W, H = 40, 30


def _mask(x0, y0, x1, y1, h=H, w=W):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def _part(obj, part, affordance):
    return {"object": obj, "part": part, "affordance": affordance, "action": affordance, "instruction": [
        f"If I want to {affordance}, which part of the {obj} should I use?",
        f"Identify the part of the {obj} used to {affordance}.",
        f"Where is the {part} of the {obj} in this image?",
        f"Where is the {part} of the {obj} that can {affordance} in this image?",
        f"{part} of the {obj}",
        f"{part} of the {obj} that can {affordance}",
    ]}


ENTRIES = [
    {"image_path": "knife_000953.jpg", "part_list": [_part("knife", "blade", "cut"), _part("knife", "handle", "hold")]},
    {"image_path": "mug_000001.jpg", "part_list": [_part("coffee mug", "handle", "hold")]},
]
MASKS = {"knife_000953-knife-blade": _mask(2, 2, 20, 8), "knife_000953-knife-handle": _mask(20, 2, 30, 8),
         "mug_000001-coffee_mug-handle": _mask(5, 10, 9, 20)}


def _write(root, entries=ENTRIES, masks=MASKS):
    folder = root / "InstructPart" / "test"
    os.makedirs(folder / "images", exist_ok=True)
    os.makedirs(folder / "masks", exist_ok=True)
    for name, mask in masks.items():
        Image.new("RGB", (W, H), "white").save(folder / "images" / f"{name}.jpg")
        Image.fromarray(mask.astype(np.uint8) * 255).save(folder / "masks" / f"{name}.png")
    (folder / "data_test.json").write_text(json.dumps(entries), encoding="utf-8")
    return folder


def _build(root, tmp_path, config="task"):
    builder = InstructPart(config_name=config, data_dir=str(root / "InstructPart"), cache_dir=str(tmp_path / f"c-{config}"))
    builder.download_and_prepare(download_mode="force_redownload")
    return builder.as_dataset()


def test_parts_grouped_by_image_with_the_chosen_instruction(tmp_path):
    _write(tmp_path)
    assert sample_name("mug_000001.jpg", "coffee mug", "handle") == "mug_000001-coffee_mug-handle"
    rows = list(_build(tmp_path, tmp_path)["test"])
    builder = InstructPart(data_dir=str(tmp_path / "InstructPart"), cache_dir=str(tmp_path / "c"))
    assert builder.source_files("test") == [str(tmp_path / "InstructPart" / "test" / "data_test.json")]
    assert [r["image_id"] for r in rows] == ["knife_000953", "mug_000001"]
    blade, handle = rows[0]["referents"]
    assert blade["referent_id"] == "test/knife_000953-knife-blade"
    assert (blade["granularity"], blade["category"], blade["object_category"]) == ("part", "blade", "knife")
    assert blade["parent_id"] is None
    assert blade["sentences"] == ["If I want to cut, which part of the knife should I use?"]
    assert np.array_equal(decode_mask(handle["mask"]), MASKS["knife_000953-knife-handle"])
    plain = list(_build(tmp_path, tmp_path, "part_of_object")["test"])
    assert plain[1]["referents"][0]["sentences"] == ["handle of the coffee mug"]
    assert len(list(_build(tmp_path, tmp_path, "all")["test"])[0]["referents"][0]["sentences"]) == 6


def test_published_card_and_streaming(tmp_path):
    _write(tmp_path)
    out = build_instructpart(str(tmp_path / "InstructPart"), str(tmp_path / "out"), cache_dir=str(tmp_path / "cache"))
    assert len(list(load_dataset(out, split="test", streaming=True))) == 2
    card = open(os.path.join(out, "README.md"), encoding="utf-8").read()
    assert "license: mit" in card and "zifuwan/InstructPart" in card and "| test | 2 | 0 | 3 | 3 |" in card


def _broken_mask_size():
    masks = dict(MASKS)
    masks["mug_000001-coffee_mug-handle"] = _mask(0, 0, 3, 3, h=H + 1)
    return masks


@pytest.mark.parametrize("entries, masks, item, key, says", [
    ([ENTRIES[0], {"image_path": "mug_000001.jpg", "part_list": [{**_part("coffee mug", "handle", "hold"),
                                                                 "instruction": ["only one"]}]}],
     MASKS, "entry [1] (mug_000001.jpg)", "part_list[0].instruction", "six instructions"),
    ([ENTRIES[0], {"image_path": "mug_000001.jpg", "part_list": [{"object": "coffee mug", "instruction": ["x"] * 6}]}],
     MASKS, "entry [1] (mug_000001.jpg)", "part_list[0].part", "missing"),
    (ENTRIES, {k: v for k, v in MASKS.items() if "blade" not in k} | {"knife_000953-knife-blade": None},
     "entry [0] (knife_000953.jpg)", "part_list[0]", "mask not found"),
    (ENTRIES, _broken_mask_size(), "entry [1] (mug_000001.jpg)", "part_list[0] (mask)", "the image"),
    ([ENTRIES[0], ENTRIES[0]], MASKS, "entry [1] (knife_000953.jpg)", "part_list[0]", "also entry [0]"),
])
def test_a_bad_entry_is_refused_naming_file_entry_and_key(tmp_path, entries, masks, item, key, says):
    folder = _write(tmp_path, entries, {k: v for k, v in masks.items() if v is not None})
    if "knife_000953-knife-blade" not in {k for k, v in masks.items() if v is not None}:
        Image.new("RGB", (W, H), "white").save(folder / "images" / "knife_000953-knife-blade.jpg")
    with pytest.raises(Exception) as info:
        _build(tmp_path, tmp_path)
    message = str(root_cause(info.value))
    assert message.startswith(f"{folder / 'data_test.json'}, {item}, key '{key}': "), message
    assert says in message
