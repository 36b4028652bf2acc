"""GroundingSuite-Eval from a fixture shaped like the released GroundingSuite-Eval.jsonl (hustvl/GroundingSuite).

Lines as in the release: ``idx``, ``image_path`` under ``unlabeled2017/``, ``class_id`` (1 stuff, 2 part, 3 multi,
4 single), ``label``, ``caption``, ``box`` as float ``[x_min, y_min, x_max, y_max]`` and ``segmentation`` as a
compressed COCO RLE string.
"""

import json
import os

import numpy as np
import pytest
from datasets import load_dataset
from PIL import Image
from pycocotools import mask as mask_utils

from run_support.cli import root_cause
from dataset_scripts.groundingsuite import METRIC_CONVENTIONS, GroundingSuiteEval, build_groundingsuite, class_of_referent
from dataset_scripts.masks import decode_mask

W, H = 40, 30


def _mask(x0, y0, x1, y1, h=H, w=W):
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def _rle(m):
    rle = mask_utils.encode(np.asfortranarray(m))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode()}


def _line(idx, image, class_id, label, caption, mask, box):
    return {"idx": idx, "image_path": f"unlabeled2017/{image}", "class_id": class_id, "label": label,
            "caption": caption, "box": box, "segmentation": _rle(mask)}


def _lines():
    return [
        _line(0, "000000000267.jpg", 4, "a plane", "A white plane in the sky.", _mask(2, 2, 20, 12), [1.5, 2.2, 20.4, 12.1]),
        _line(1, "000000000615.jpg", 1, "smoke", "White smoke trailing behind.", _mask(0, 20, 40, 30), [0.3, 19.7, 39.9, 29.9]),
        _line(2, "000000000267.jpg", 2, "the tail", "The tail of the plane, on the left.", _mask(2, 2, 6, 12), [2, 2, 6, 12]),
    ]


def _write(root, lines):
    os.makedirs(root / "unlabeled2017", exist_ok=True)
    for name in ("000000000267.jpg", "000000000615.jpg"):
        Image.new("RGB", (W, H), "gray").save(root / "unlabeled2017" / name)
    with open(root / "GroundingSuite-Eval.jsonl", "w", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")


def _build(root, tmp_path):
    builder = GroundingSuiteEval(data_dir=str(root), cache_dir=str(tmp_path / "cache"))
    builder.download_and_prepare(download_mode="force_redownload")
    return builder.as_dataset()


def test_lines_become_rows_per_image_with_class_in_the_id(tmp_path):
    _write(tmp_path / "gs", _lines())
    rows = list(_build(tmp_path / "gs", tmp_path)["test"])
    assert GroundingSuiteEval(data_dir=str(tmp_path / "gs"), cache_dir=str(tmp_path / "c")).source_files("test") == [
        str(tmp_path / "gs" / "GroundingSuite-Eval.jsonl")]
    assert [r["image_id"] for r in rows] == ["000000000267", "000000000615"]
    plane, tail = rows[0]["referents"]
    assert plane["referent_id"] == "single/0" and tail["referent_id"] == "part/2"
    assert class_of_referent(tail["referent_id"]) == "part"
    assert (plane["granularity"], tail["granularity"]) == ("object", "part")
    assert plane["sentences"] == ["A white plane in the sky."] and plane["category"] == "a plane"
    assert tail["category"] == "the tail" and tail["object_category"] == "" and tail["parent_id"] is None
    assert np.allclose(plane["bbox"], [1.5, 2.2, 18.9, 9.9], atol=1e-4)  # xyxy -> xywh
    assert np.array_equal(decode_mask(tail["mask"]), _mask(2, 2, 6, 12).astype(bool))
    assert rows[1]["referents"][0]["referent_id"] == "stuff/1" and rows[1]["source"] == "coco-unlabeled2017"


def test_published_card_states_source_licence_counts_and_conventions(tmp_path):
    _write(tmp_path / "gs", _lines())
    out = build_groundingsuite(str(tmp_path / "gs"), str(tmp_path / "out"), cache_dir=str(tmp_path / "cache"))
    assert len(list(load_dataset(out, split="test", streaming=True))) == 2
    card = open(os.path.join(out, "README.md"), encoding="utf-8").read()
    assert "license: apache-2.0" in card and "github.com/hustvl/GroundingSuite" in card
    assert "| test | 2 | 2 | 1 | 3 |" in card
    assert "  - gIoU: mean over expressions of the mask IoU (GIoU, 'mean IoU' in their code): our mIoU" in card
    assert "arXiv:2503.10596" in card  # the paper's id in the repository's README (ICCV 2025)
    assert METRIC_CONVENTIONS["harness_options"] == {"resolution": "original", "empty_gt": "zero"}


@pytest.mark.parametrize("edit, line, key, says", [
    (lambda ls: ls[1].pop("caption"), 2, "caption", "missing"),
    (lambda ls: ls[2].update(segmentation=_rle(_mask(0, 0, 5, 5, h=H + 2))), 3, "segmentation", "RLE size"),
    (lambda ls: ls[1].update(segmentation=_rle(np.zeros((H, W), np.uint8))), 2, "segmentation", "empty"),
    (lambda ls: ls[1].update(image_path="unlabeled2017/missing.jpg"), 2, "image_path", "image not found"),
    (lambda ls: ls[2].update(idx=0), 3, "idx", "already used on line 1"),
])
def test_a_bad_line_is_refused_naming_file_line_and_key(tmp_path, edit, line, key, says):
    lines = _lines()
    edit(lines)
    _write(tmp_path / "gs", lines)
    with pytest.raises(Exception) as info:
        _build(tmp_path / "gs", tmp_path)
    message = str(root_cause(info.value))
    assert message.startswith(f"{tmp_path / 'gs' / 'GroundingSuite-Eval.jsonl'}, line {line}, key '{key}': "), message
    assert says in message


def test_config_label_makes_the_short_label_the_sentence(tmp_path):
    _write(tmp_path / "gs", _lines())
    builder = GroundingSuiteEval(config_name="label", data_dir=str(tmp_path / "gs"), cache_dir=str(tmp_path / "c"))
    builder.download_and_prepare(download_mode="force_redownload")
    plane, tail = builder.as_dataset()["test"][0]["referents"]
    assert plane["sentences"] == ["a plane"] and tail["sentences"] == ["the tail"]
    lines = _lines()
    lines[1].pop("label")  # now the field that is read: a missing one is refused
    _write(tmp_path / "gs2", lines)
    with pytest.raises(Exception) as info:
        GroundingSuiteEval(config_name="label", data_dir=str(tmp_path / "gs2"),
                           cache_dir=str(tmp_path / "c2")).download_and_prepare(download_mode="force_redownload")
    assert ", line 2, key 'label': missing" in str(root_cause(info.value))


def test_their_readme_tree_images_unlabeled2017_is_read(tmp_path):
    """Their README unzips unlabeled2017.zip into ./images and passes --image_dir ./images."""
    _write(tmp_path / "gs", _lines())
    os.makedirs(tmp_path / "gs" / "images")
    os.rename(tmp_path / "gs" / "unlabeled2017", tmp_path / "gs" / "images" / "unlabeled2017")
    assert [r["image_id"] for r in _build(tmp_path / "gs", tmp_path)["test"]] == ["000000000267", "000000000615"]
