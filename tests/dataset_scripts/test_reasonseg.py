"""ReasonSeg from fixtures shaped like LISA's release: ``{split}/{name}.jpg`` + ``{name}.json`` (labelme shapes).

The quirks LISA's ``get_mask_from_json`` handles are in the fixtures: a ``flag`` shape (skipped), an ``ignore``
shape inside a target and a target inside an ``ignore`` shape (painted largest first), a cp1252-encoded JSON,
``is_sentence`` (short and long queries) and several ``text`` entries of which LISA evaluates the first.
"""

import json
import os

import numpy as np
import pytest
from datasets import load_dataset
from PIL import Image

from run_support.cli import root_cause
from dataset_scripts.masks import decode_mask
from dataset_scripts.reasonseg import METRIC_CONVENTIONS, ReasonSeg, build_reasonseg

W, H = 40, 30


def _rect(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def _shape(label, points):
    return {"label": label, "points": points, "group_id": None, "shape_type": "polygon", "flags": {}}


def _samples():
    return {
        # long query: a target with an ignore hole, and a deprecated flag shape
        "a": {"text": ["What would you sit on after a long walk?", "the bench"], "is_sentence": True,
              "shapes": [_shape("target", _rect(2, 2, 30, 20)), _shape("ignore", _rect(10, 8, 16, 14)),
                         _shape("flag", _rect(32, 22, 38, 28))]},
        # short query: a small target inside a larger ignore region listed after it wins (smaller painted last)
        "b": {"text": ["the café sign"], "is_sentence": False,
              "shapes": [_shape("target", _rect(5, 5, 12, 12)), _shape("ignore_1", _rect(0, 0, 30, 25))]},
        # nothing but flag: no target at all
        "c": {"text": ["nothing here"], "is_sentence": False, "shapes": [_shape("Flag", _rect(1, 1, 9, 9))]},
    }


def _write(root, samples, split="val", tree=("ReasonSeg",)):
    folder = root.joinpath(*tree) / split
    os.makedirs(folder, exist_ok=True)
    for name, anno in samples.items():
        Image.new("RGB", (W, H), "green").save(folder / f"{name}.jpg")
        encoding = "cp1252" if name == "b" else "utf-8"  # LISA falls back to cp1252
        with open(folder / f"{name}.json", "w", encoding=encoding) as f:
            json.dump(anno, f, ensure_ascii=False)
    return folder


def _builder(root, tmp_path, config="default"):
    builder = ReasonSeg(config_name=config, data_dir=str(root), cache_dir=str(tmp_path / f"cache-{config}"))
    builder.download_and_prepare(download_mode="force_redownload")
    return builder


def _filled(x0, y0, x1, y1):
    """What LISA's OpenCV calls paint for an integer rectangle: fill plus a one-pixel outline, both far edges in."""
    mask = np.zeros((H, W), bool)
    mask[y0:y1 + 1, x0:x1 + 1] = True
    return mask


def test_masks_follow_lisas_painting_and_the_first_text_is_kept(tmp_path):
    _write(tmp_path, _samples())
    builder = _builder(tmp_path, tmp_path)
    rows = {r["image_id"]: r for r in builder.as_dataset()["val"]}
    assert sorted(rows) == ["a", "b"]  # c has no target: skipped, logged
    assert [os.path.basename(p) for p in builder.source_files("val")] == ["a.json", "b.json", "c.json"]
    a, b = rows["a"]["referents"][0], rows["b"]["referents"][0]
    assert np.array_equal(decode_mask(a["mask"]), _filled(2, 2, 30, 20) & ~_filled(10, 8, 16, 14))
    assert np.array_equal(decode_mask(b["mask"]), _filled(5, 5, 12, 12))
    assert a["sentences"] == ["What would you sit on after a long walk?"]
    assert b["sentences"] == ["the café sign"]  # read through the cp1252 fallback
    assert a["referent_id"] == "val/a" and a["granularity"] == "object"
    records = [json.loads(line) for line in open(builder.rejects_path, encoding="utf-8")]
    assert {(r["action"], r["item_id"]) for r in records} == {("fixed", "val/a"), ("fixed", "val/b"), ("skipped", "val/c")}
    assert "stored as background" in next(r["reason"] for r in records if r["item_id"] == "val/a")


def test_configs_keep_every_text_or_one_query_length(tmp_path):
    _write(tmp_path, _samples())
    every = {r["image_id"]: r for r in _builder(tmp_path, tmp_path, "all_texts").as_dataset()["val"]}
    assert every["a"]["referents"][0]["sentences"] == ["What would you sit on after a long walk?", "the bench"]
    assert [r["image_id"] for r in _builder(tmp_path, tmp_path, "long").as_dataset()["val"]] == ["a"]
    assert [r["image_id"] for r in _builder(tmp_path, tmp_path, "short").as_dataset()["val"]] == ["b"]


def test_published_card_and_streaming(tmp_path):
    _write(tmp_path, _samples())
    out = build_reasonseg(str(tmp_path), str(tmp_path / "out"), cache_dir=str(tmp_path / "cache"))
    assert sorted(r["image_id"] for r in load_dataset(out, split="val", streaming=True)) == ["a", "b"]
    card = open(os.path.join(out, "README.md"), encoding="utf-8").read()
    assert "license: apache-2.0" in card and "dvlab-research/LISA" in card and "| val | 2 |" in card
    assert "cIoU" in METRIC_CONVENTIONS["metrics"] and "ignore" in card


@pytest.mark.parametrize("edit, key, says", [
    (lambda s: s["a"].pop("is_sentence"), "is_sentence", "missing"),
    (lambda s: s["a"]["shapes"][0].update(points=[[1, 1], [5, 5]]), "shapes[0].points", "at least 3"),
    (lambda s: s["a"].update(text=[]), "text", "non-empty list"),
])
def test_a_bad_annotation_is_refused_naming_file_and_key(tmp_path, edit, key, says):
    samples = _samples()
    edit(samples)
    folder = _write(tmp_path, samples)
    with pytest.raises(Exception) as info:
        _builder(tmp_path, tmp_path)
    message = str(root_cause(info.value))
    assert message.startswith(f"{folder / 'a.json'}, the sample, key '{key}': "), message
    assert says in message


def test_an_image_without_its_json_is_refused(tmp_path):
    folder = _write(tmp_path, _samples())
    os.remove(folder / "b.json")
    with pytest.raises(Exception) as info:
        _builder(tmp_path, tmp_path)
    assert str(root_cause(info.value)).startswith(f"{folder / 'b.jpg'}, the image, key '(json file)': no annotation")


def test_polygons_are_painted_as_lisas_opencv_calls_paint_them():
    from dataset_scripts.reasonseg import lisa_polygon_mask

    # points truncated to int (2.9 -> 2), filled, and the outline drawn: a triangle's slanted edges included
    triangle = lisa_polygon_mask([[2.9, 3.7], [15.2, 5.0], [9.0, 14.99]], H, W)
    assert triangle[3, 2] and triangle[14, 9] and triangle[5, 15]  # every corner, as truncated, is painted
    assert not triangle[2, 3] and not triangle[15, 9]
    # the top row of each column: the 8-connected outline of the edge (2, 3) -> (15, 5), as opencv-python 5.1's
    # polylines + fillPoly paint this triangle (checked against it outside the package: the masks are equal)
    assert [int(np.flatnonzero(triangle[:, x])[0]) for x in range(2, 16)] == [3, 3, 3, 3, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5]
    with pytest.raises(ValueError):
        lisa_polygon_mask([[1, 1], [5, 5]], H, W)


def test_equal_areas_paint_the_first_listed_last_as_lisas_reversed_argsort(tmp_path):
    from dataset_scripts.reasonseg import paint_shapes

    same = _rect(4, 4, 10, 10)
    target, ignored = paint_shapes([_shape("target", same), _shape("ignore", same)], H, W, "x.json")
    assert target.sum() == 49 and ignored == 0  # the first listed (target) is painted last and wins
    target, ignored = paint_shapes([_shape("ignore", same), _shape("target", same)], H, W, "x.json")
    assert target.sum() == 0 and ignored == 49


def test_lisas_own_tree_is_read(tmp_path):
    _write(tmp_path, _samples(), tree=("reason_seg", "ReasonSeg"))
    assert sorted(r["image_id"] for r in _builder(tmp_path, tmp_path).as_dataset()["val"]) == ["a", "b"]
