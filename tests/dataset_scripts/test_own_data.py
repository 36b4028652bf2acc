"""Users' own folder (metadata.jsonl or COCO annotations.json with sentences), built from generated fixtures.

Every mask encoding builds to the same pixels; every malformed row is refused with one line naming the file,
the line (or annotation) and the key; the published folder reads back with ``load_dataset(..., streaming=True)``.
"""

import json
import os

import numpy as np
import pytest
from datasets import load_dataset
from PIL import Image
from pycocotools import mask as mask_utils

from run_support.cli import root_cause
from dataset_scripts.masks import decode_mask
from dataset_scripts.own_data import OwnData, build_own_data

W, H = 40, 30
CAR = (4, 6, 24, 22)  # x0, y0, x1, y1 (exclusive)
WHEEL = (6, 16, 12, 22)


def _box_mask(box):
    m = np.zeros((H, W), bool)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = True
    return m


def _image(path, size=(W, H)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", size, "blue").save(path)


def _png(path, mask):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)


def _rle(mask):
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode()}


def _polygon(box):
    x0, y0, x1, y1 = box
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def _write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")


def _good_rows():
    return [
        {"file_name": "a.png", "referents": [
            {"id": "car", "granularity": "object", "category": "car", "sentences": ["the car"], "mask": "masks/car.png"},
            {"id": "wheel", "granularity": "part", "category": "wheel", "parent": "car",
             "sentences": ["the wheel of the car"], "mask": _polygon(WHEEL)},
        ]},
        {"file_name": "b.png", "image_id": "img-b", "referents": [
            {"granularity": "object", "sentences": ["a blue thing", " the box "], "mask": _rle(_box_mask(CAR))},
        ]},
    ]


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "mine"
    for name in ("a.png", "b.png"):
        _image(str(root / "train" / name))
    _png(str(root / "train" / "masks" / "car.png"), _box_mask(CAR))
    _write_jsonl(str(root / "train" / "metadata.jsonl"), _good_rows())
    return root


def _build(root, tmp_path):
    builder = OwnData(data_dir=str(root), cache_dir=str(tmp_path / "cache"))
    builder.download_and_prepare(download_mode="force_redownload")
    return builder.as_dataset()


def _refused(root, tmp_path):
    with pytest.raises(Exception) as info:
        _build(root, tmp_path)
    error = root_cause(info.value)
    assert isinstance(error, ValueError), error
    return str(error)


def test_every_mask_encoding_builds_to_the_same_pixels(folder, tmp_path):
    ds = _build(folder, tmp_path)["train"]
    assert OwnData(data_dir=str(folder), cache_dir=str(tmp_path / "cache")).source_files("train") == [
        str(folder / "train" / "metadata.jsonl")]
    rows = {r["image_id"]: r for r in ds}
    assert set(rows) == {"a", "img-b"}
    car, wheel = rows["a"]["referents"]
    assert np.array_equal(decode_mask(car["mask"]), _box_mask(CAR))  # PNG
    assert np.array_equal(decode_mask(rows["img-b"]["referents"][0]["mask"]), _box_mask(CAR))  # RLE
    # polygons: pycocotools rasterises the closed rectangle one pixel wider at its far edges, as COCO does
    assert decode_mask(wheel["mask"])[WHEEL[1]:WHEEL[3], WHEEL[0]:WHEEL[2]].all()
    assert wheel["granularity"] == "part" and wheel["parent_id"] == car["referent_id"] == "train/a/car"
    assert wheel["object_category"] == "car" and wheel["category"] == "wheel"
    assert car["bbox"] == [4.0, 6.0, 20.0, 16.0]
    assert rows["img-b"]["referents"][0]["referent_id"] == "train/img-b/0"
    assert rows["img-b"]["referents"][0]["sentences"] == ["a blue thing", "the box"]


def test_published_folder_streams_back(folder, tmp_path):
    out = build_own_data(str(folder), str(tmp_path / "out"), cache_dir=str(tmp_path / "cache"))
    stream = load_dataset(out, split="train", streaming=True)
    rows = list(stream)
    assert sorted(r["image_id"] for r in rows) == ["a", "img-b"]
    assert sum(len(r["referents"]) for r in rows) == 3
    card = open(os.path.join(out, "README.md"), encoding="utf-8").read()
    assert "| train | 2 | 2 | 1 | 4 |" in card  # images, objects, parts, sentences


def _with(rows_edit):
    rows = _good_rows()
    rows_edit(rows)
    return rows


@pytest.mark.parametrize("edit, line, key, says", [
    (lambda r: r[1].pop("file_name"), 2, "file_name", "missing"),
    (lambda r: r[0]["referents"][0].pop("sentences"), 1, "referents[0].sentences", "missing"),
    (lambda r: r[0]["referents"][1].update(granularity="piece"), 1, "referents[1].granularity", "'piece'"),
    (lambda r: r[1]["referents"][0].update(mask=_rle(np.zeros((H + 1, W), bool) | True)), 2, "referents[0].mask", "RLE size"),
    (lambda r: r[0]["referents"][1].update(parent="truck"), 1, "referents[1].parent", "'truck'"),
    (lambda r: r[0]["referents"][0].update(mask="masks/broken.png"), 1, "referents[0].mask", "cannot read mask PNG"),
    (lambda r: r[1].update(file_name="missing.png"), 2, "file_name", "image not found"),
    (lambda r: r[0]["referents"][0].update(sentence=["typo"]), 1, "referents[0].sentence", "unknown key"),
    (lambda r: r[1]["referents"][0].update(sentences=["  "]), 2, "referents[0].sentences", "blank"),
    (lambda r: r[0]["referents"][1].update(mask=_polygon((30, 2, 38, 5))), 1, "referents[1].parent", "no pixel"),
    (lambda r: r.append({"file_name": "a.png", "referents": r[0]["referents"]}), 3, "file_name", "already used on line 1"),
])
def test_a_bad_row_is_refused_naming_file_line_and_key(folder, tmp_path, edit, line, key, says):
    (folder / "train" / "masks" / "broken.png").write_bytes(b"not a png")
    _write_jsonl(str(folder / "train" / "metadata.jsonl"), _with(edit))
    message = _refused(folder, tmp_path)
    assert message.startswith(f"{folder / 'train' / 'metadata.jsonl'}, line {line}, key '{key}': "), message
    assert says in message
    assert "\n" not in message


def test_a_png_mask_of_another_size_is_refused(folder, tmp_path):
    _png(str(folder / "train" / "masks" / "car.png"), np.ones((H, W + 2), bool))
    message = _refused(folder, tmp_path)
    assert ", line 1, key 'referents[0].mask': " in message and f"the image {H}x{W}" in message


def _coco(root):
    images = [{"id": 7, "file_name": "a.png", "width": W, "height": H}]
    categories = [{"id": 3, "name": "car"}, {"id": 4, "name": "wheel"}]
    annotations = [
        {"id": 70, "image_id": 7, "category_id": 3, "segmentation": _polygon(CAR), "iscrowd": 0,
         "sentences": [{"sent": "the car"}, "the blue car"]},
        {"id": 71, "image_id": 7, "category_id": 4, "granularity": "part", "parent_id": 70, "iscrowd": 1,
         "segmentation": {"size": [H, W], "counts": mask_utils.frPyObjects(
             [list(map(float, _polygon(WHEEL)[0]))], H, W)[0]["counts"].decode()}, "sentences": ["its wheel"]},
    ]
    return {"images": images, "annotations": annotations, "categories": categories}


def test_coco_instances_with_sentences_build(tmp_path):
    root = tmp_path / "coco"
    _image(str(root / "a.png"))
    (root / "annotations.json").write_text(json.dumps(_coco(root)))
    rows = list(_build(root, tmp_path)["train"])
    assert [r["image_id"] for r in rows] == ["7"]
    car, wheel = rows[0]["referents"]
    assert car["sentences"] == ["the car", "the blue car"] and car["category"] == "car"
    assert wheel["parent_id"] == "train/7/70" and wheel["object_category"] == "car" and wheel["category"] == "wheel"


@pytest.mark.parametrize("edit, item, key", [
    (lambda c: c["annotations"][1].pop("sentences"), "annotations[1] (id 71)", "sentences"),
    (lambda c: c["annotations"][1].update(parent_id=99), "annotations[1] (id 71)", "parent_id"),
    (lambda c: c["annotations"][0].update(image_id=8), "annotations[0] (id 70)", "image_id"),
    (lambda c: c["annotations"][0].update(granularity="thing"), "annotations[0] (id 70)", "granularity"),
    (lambda c: c["annotations"][1].update(segmentation={"size": [H, W + 1], "counts": "0"}),
     "annotations[1] (id 71)", "segmentation"),
])
def test_a_bad_coco_annotation_is_refused_naming_index_id_and_key(tmp_path, edit, item, key):
    root = tmp_path / "coco"
    _image(str(root / "a.png"))
    coco = _coco(root)
    edit(coco)
    (root / "annotations.json").write_text(json.dumps(coco))
    message = _refused(root, tmp_path)
    assert message.startswith(f"{root / 'annotations.json'}, {item}, key '{key}': "), message


def test_an_exif_turned_image_is_sized_and_masked_as_shown(tmp_path):
    """A phone photo stored 40x30 with EXIF orientation 6 is shown (and annotated, and seen by the model) 30x40."""
    root = tmp_path / "turned"
    os.makedirs(root)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (W, H), "red").save(root / "p.jpg", exif=exif.tobytes())
    shown = np.zeros((W, H), bool)  # height W, width H
    shown[2:20, 3:12] = True
    _write_jsonl(str(root / "metadata.jsonl"), [
        {"file_name": "p.jpg", "referents": [{"granularity": "object", "sentences": ["it"], "mask": _rle(shown)}]}])
    row = next(iter(_build(root, tmp_path)["train"]))
    assert (row["width"], row["height"]) == (H, W)
    assert np.array_equal(decode_mask(row["referents"][0]["mask"]), shown)
    _write_jsonl(str(root / "metadata.jsonl"), [  # a mask of the stored (unturned) size is refused
        {"file_name": "p.jpg", "referents": [{"granularity": "object", "sentences": ["it"], "mask": _rle(_box_mask(CAR))}]}])
    assert "RLE size [30, 40] is not the image's [height, width] [40, 30]" in _refused(root, tmp_path)


def test_a_coco_image_whose_declared_size_is_not_the_files_is_refused(tmp_path):
    root = tmp_path / "coco"
    _image(str(root / "a.png"))
    coco = _coco(root)
    coco["images"][0]["width"] = W + 1
    (root / "annotations.json").write_text(json.dumps(coco))
    message = _refused(root, tmp_path)
    assert message.startswith(f"{root / 'annotations.json'}, images[0] (id 7), key 'width': 41, but a.png is 40x30"), message


def test_load_mres_dataset_builds_an_own_data_folder(folder, tmp_path):
    """What training calls (dataset_scripts.load.load_mres_dataset) takes the folder itself, map-style and streaming,
    and a bad row stops it with the row's own error."""
    from dataset_scripts.load import load_mres_dataset
    from dataset_scripts.strict_rows import RowError

    rows = load_mres_dataset([str(folder)], "train", cache_dir=str(tmp_path / "cache"))
    assert sorted(rows["image_id"]) == ["a", "img-b"]
    streamed = load_mres_dataset([str(folder)], "train", streaming=True, cache_dir=str(tmp_path / "cache"))
    assert sorted(r["image_id"] for r in streamed) == ["a", "img-b"]
    with pytest.raises(ValueError, match=r"has no split 'validation'; its splits: \['train'\]"):
        load_mres_dataset([str(folder)], "validation", cache_dir=str(tmp_path / "cache"))
    _write_jsonl(str(folder / "train" / "metadata.jsonl"), _with(lambda r: r[1]["referents"][0].pop("mask")))
    with pytest.raises(RowError) as info:
        load_mres_dataset([str(folder)], "train", cache_dir=str(tmp_path / "cache"))
    assert str(info.value) == f"{folder / 'train' / 'metadata.jsonl'}, line 2, key 'referents[0].mask': missing"
