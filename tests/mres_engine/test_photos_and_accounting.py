"""Photos and boxes as real datasets have them, through the manifest step and a shard:

EXIF-rotated JPEGs, 16-bit PNGs, crowd boxes, repeated annotation ids, a corrupt file, a category
with no part vocabulary, and a stage that rejects an object. Every image and every box must sit in
exactly one account (written, or skipped once), the masks must lie on the photo that ``datasets``
decodes, and two runs must write the same rejects.
"""

import json
import os
from collections import Counter
from dataclasses import replace

import numpy as np
import pyarrow.parquet as pq
import pytest
from datasets import Image as ImageFeature
from PIL import Image, ImageOps

from dataset_scripts.masks import decode_mask, encode_mask
from mres_engine import layout
from mres_engine.readers.manifest import prepare_manifest
from mres_engine.options import RunnerOptions
from mres_engine.records import ImageRecord, new_referent, object_referent_id
from mres_engine.shard import process_shard
from mres_engine.stages.base import Reject, StageOutput
from mres_engine.stages.load_images import LoadImages, orient_box
from modeling_unires.image_processing_unires import to_rgb_image
from mres_engine.stages.part_vocabulary import FilePartNames, PartVocabulary

STORED_BOX = [10, 20, 30, 15]  # x, y, w, h in the stored pixels (120 x 80), painted red
RED, GREY = (220, 20, 20), (128, 128, 128)


def _exif_jpeg(path, orientation: int) -> None:
    image = Image.new("RGB", (120, 80), GREY)
    x, y, w, h = STORED_BOX
    image.paste(RED, (x, y, x + w, y + h))
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(path, "JPEG", quality=98, exif=exif.tobytes())


class BoxObjects:
    """An object referent per box with the box as its mask (what SAM would give for a rectangle)."""

    name = "box_objects"

    def __call__(self, records):
        out = StageOutput()
        for record in records:
            referents = []
            for box in record.boxes:
                mask = np.zeros((record.height, record.width), bool)
                x, y, w, h = (int(round(v)) for v in box["bbox"])
                mask[y : y + h, x : x + w] = True
                referents.append(new_referent(object_referent_id(record.image_id, box["box_id"]), "object", box["category"],
                                              box["category"], box["bbox"], encode_mask(mask)))
            if not referents:
                out.rejects.append(Reject(record.image_id, self.name, "no input box"))
                continue
            out.records.append(replace(record, referents=referents))
        return out


class RejectObjects:
    """Reject the objects whose referent id is listed (as a filter stage would)."""

    name = "reject_objects"

    def __init__(self, referent_ids):
        self.referent_ids = set(referent_ids)

    def __call__(self, records):
        out = StageOutput()
        for record in records:
            kept = [r for r in record.referents if r["referent_id"] not in self.referent_ids]
            for r in record.referents:
                if r["referent_id"] in self.referent_ids:
                    out.rejects.append(Reject(record.image_id, self.name, "not wanted", r["referent_id"]))
            out.records.append(replace(record, referents=kept))
        return out


@pytest.fixture(scope="module")
def photo_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    images = root / "images"
    images.mkdir()
    _exif_jpeg(images / "rot6.jpg", 6)
    _exif_jpeg(images / "rot8.jpg", 8)
    Image.fromarray(np.full((48, 64), 32768, np.uint16)).save(images / "grey16.png")  # mode I;16, mid-grey
    (images / "corrupt.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    Image.new("RGB", (64, 48), GREY).save(images / "plain.png")
    Image.new("RGB", (64, 48), GREY).save(images / "other.png")
    manifest = {
        "images": [
            {"id": 1, "file_name": "rot6.jpg", "width": 120, "height": 80},  # COCO: the stored size
            {"id": 2, "file_name": "rot8.jpg", "width": 120, "height": 80},
            {"id": 3, "file_name": "grey16.png", "width": 64, "height": 48},
            {"id": 4, "file_name": "corrupt.jpg", "width": 64, "height": 48},
            {"id": 5, "file_name": "plain.png", "width": 64, "height": 48},
            {"id": 6, "file_name": "other.png", "width": 64, "height": 48},
        ],
        "categories": [{"id": 1, "name": "dog"}, {"id": 2, "name": "cup"}],
        "annotations": [
            {"id": 11, "image_id": 1, "bbox": STORED_BOX, "category_id": 1},
            {"id": 21, "image_id": 2, "bbox": STORED_BOX, "category_id": 1},
            {"id": 31, "image_id": 3, "bbox": [4, 4, 20, 20], "category_id": 1},
            {"id": 41, "image_id": 4, "bbox": [4, 4, 20, 20], "category_id": 1},
            {"id": 51, "image_id": 5, "bbox": [4, 4, 20, 20], "category_id": 1},
            {"id": 52, "image_id": 5, "bbox": [30, 4, 20, 20], "category_id": 2},  # no part vocabulary: written without parts
            {"id": 53, "image_id": 5, "bbox": [0, 0, 64, 48], "category_id": 1, "iscrowd": 1},  # a crowd: not one object
            {"id": 51, "image_id": 5, "bbox": [8, 8, 10, 10], "category_id": 2},  # repeats id 51 on image 5
            {"id": 61, "image_id": 6, "bbox": [4, 4, 20, 20], "category_id": 2},  # no parts, then rejected by a stage
            {"id": 62, "image_id": 6, "bbox": [30, 4, 20, 20], "category_id": 1},
        ],
    }
    annotations = root / "detections.json"
    annotations.write_text(json.dumps(manifest))
    vocabulary = root / "parts.json"
    vocabulary.write_text(json.dumps({"dog": ["ear", "tail"]}))
    return {"root": root, "annotations": str(annotations), "image_dir": str(images), "manifest": manifest,
            "vocabulary": str(vocabulary)}


def _run(photo_set, out):
    options = RunnerOptions(annotations=photo_set["annotations"], image_dir=photo_set["image_dir"], output_dir=str(out),
                            num_shards=1, source="test")
    prepare_manifest(options)
    stages = [LoadImages(), BoxObjects(), PartVocabulary(FilePartNames(photo_set["vocabulary"])), RejectObjects({"6/o61"})]
    process_shard(str(out), 0, 1, stages, split="train", images_per_batch=4, image_dir=photo_set["image_dir"], progress=False)
    rows = []
    for path in sorted((out / layout.DATA_DIR).glob("*.parquet")):
        rows += pq.read_table(path).to_pylist()
    rejects = [json.loads(line) for path in sorted((out / layout.REJECTS_DIR).glob("*.jsonl")) for line in open(path)]
    return rows, rejects


@pytest.fixture(scope="module")
def two_runs(photo_set):
    return _run(photo_set, photo_set["root"] / "run1"), _run(photo_set, photo_set["root"] / "run2")


def test_every_image_and_box_sits_in_exactly_one_account(photo_set, two_runs):
    rows, rejects = two_runs[0]
    manifest = photo_set["manifest"]
    skipped = [r for r in rejects if r["action"] == "skipped"]
    assert not [i for i, n in Counter(r["item_id"] for r in skipped).items() if n > 1], "an item skipped twice"
    # images: written or skipped, once
    written_images = {row["image_id"] for row in rows}
    skipped_images = {r["item_id"] for r in skipped if r.get("level") == "image"}
    assert not written_images & skipped_images
    assert written_images | skipped_images == {str(i["id"]) for i in manifest["images"]}
    # boxes: skipped by the input step, or an object that is written, skipped, or in a skipped image
    input_skipped = [r for r in skipped if r["stage"] == "input"]
    kept = Counter((str(a["image_id"]), str(a["id"])) for a in manifest["annotations"])
    kept.subtract(Counter((r["image_id"], r["item_id"]) for r in input_skipped))
    objects = {object_referent_id(image, box) for (image, box), n in kept.items() if n > 0}
    assert sum(kept.values()) == len(objects) == len(manifest["annotations"]) - len(input_skipped)
    written = {r["referent_id"] for row in rows for r in row["referents"] if r["granularity"] == "object"}
    skipped_objects = {r["item_id"] for r in skipped if r.get("level") == "referent"}
    in_skipped_images = {o for o in objects if o.split("/")[0] in skipped_images} - skipped_objects
    assert not written & skipped_objects, "a written object is also logged as skipped"
    assert written | skipped_objects | in_skipped_images == objects
    assert len(written) + len(skipped_objects) + len(in_skipped_images) == len(objects)
    # what the stages gave up of a kept object is logged under its own id, naming the object
    parts = [r for r in skipped if r.get("level") == "parts"]
    assert {r["item_id"] for r in parts} == {"5/o52#parts", "6/o61#parts"}
    assert {r["referent_id"] for r in parts} <= objects


def test_crowd_boxes_and_repeated_ids_are_skipped_by_the_input_step(two_runs):
    rows, rejects = two_runs[0]
    reasons = {(r["item_id"], r["reason"].split(":")[0]) for r in rejects if r["stage"] == "input" and r["action"] == "skipped"}
    assert reasons == {("53", "crowd box"), ("51", "repeated annotation id")}
    (row,) = [row for row in rows if row["image_id"] == "5"]
    assert sorted(r["referent_id"] for r in row["referents"]) == ["5/o51", "5/o52"]
    assert [r["bbox"] for r in row["referents"] if r["referent_id"] == "5/o51"] == [[4.0, 4.0, 20.0, 20.0]]


def test_two_runs_write_the_same_rejects_and_no_reason_names_a_memory_address(photo_set, two_runs):
    names = sorted(p.name for p in (photo_set["root"] / "run1" / layout.REJECTS_DIR).glob("*.jsonl"))
    assert names
    for name in names:
        first = (photo_set["root"] / "run1" / layout.REJECTS_DIR / name).read_bytes()
        assert first == (photo_set["root"] / "run2" / layout.REJECTS_DIR / name).read_bytes(), name
    (corrupt,) = [r for r in two_runs[0][1] if r["item_id"] == "4"]
    assert corrupt["reason"].startswith("corrupt image") and " at 0x" not in corrupt["reason"]
    assert all(" at 0x" not in r["reason"] for r in two_runs[0][1])


@pytest.mark.parametrize("image_id", ["1", "2"], ids=["orientation-6", "orientation-8"])
def test_exif_rotated_photos_are_stored_upright_with_their_masks(photo_set, two_runs, image_id):
    rows, rejects = two_runs[0]
    (row,) = [row for row in rows if row["image_id"] == image_id]
    source = os.path.join(photo_set["image_dir"], "rot6.jpg" if image_id == "1" else "rot8.jpg")
    upright = ImageOps.exif_transpose(Image.open(source)).convert("RGB")
    decoded = ImageFeature().decode_example(row["image"]).convert("RGB")  # what load_dataset hands a user
    assert decoded.size == upright.size == (row["width"], row["height"]) == (80, 120)
    assert decoded.getexif().get(0x0112) is None  # stored upright: no viewer turns it again
    assert np.abs(np.asarray(decoded, float) - np.asarray(upright, float)).mean() < 3
    (obj,) = row["referents"]
    mask = decode_mask(obj["mask"])
    assert mask.shape == (120, 80)
    pixels = np.asarray(decoded, float)
    inside, outside = pixels[mask].mean(axis=0), pixels[~mask].mean(axis=0)
    assert inside[0] > 180 and inside[1] < 70, inside  # the mask covers the red box ...
    assert abs(outside - 128).max() < 20, outside  # ... and nothing else
    fixes = [r for r in rejects if r["item_id"] == image_id and r["action"] == "fixed"]
    assert [r["reason"].split(":")[0] for r in fixes] == [f"EXIF orientation {6 if image_id == '1' else 8} applied"]


@pytest.mark.parametrize("orientation", range(2, 9))
def test_boxes_turn_with_every_exif_orientation(tmp_path, orientation):
    path = tmp_path / "photo.jpg"
    _exif_jpeg(path, orientation)
    record = ImageRecord("p", str(path), 120, 80, "t", boxes=[{"box_id": "1", "bbox": STORED_BOX, "category": "dog"}])
    (loaded,) = LoadImages()([record]).records
    upright = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"), float)
    assert loaded.image.size == (upright.shape[1], upright.shape[0]) == (loaded.width, loaded.height)
    x, y, w, h = (int(round(v)) for v in loaded.boxes[0]["bbox"])
    assert loaded.boxes[0]["bbox"] == orient_box(STORED_BOX, orientation, 120, 80)
    assert upright[y + 1 : y + h - 1, x + 1 : x + w - 1, 0].min() > 180  # red inside the turned box
    assert np.asarray(loaded.image, float)[y + 1 : y + h - 1, x + 1 : x + w - 1, 0].min() > 180


def test_a_manifest_giving_the_upright_size_keeps_its_boxes(tmp_path):
    path = tmp_path / "photo.jpg"
    _exif_jpeg(path, 6)
    upright_box = orient_box(STORED_BOX, 6, 120, 80)
    record = ImageRecord("p", str(path), 80, 120, "t", boxes=[{"box_id": "1", "bbox": upright_box, "category": "dog"}])
    (loaded,) = LoadImages()([record]).records
    assert loaded.image.size == (80, 120) and loaded.boxes[0]["bbox"] == upright_box


def test_sixteen_bit_images_are_scaled_not_clipped(two_runs, photo_set):
    image = Image.open(os.path.join(photo_set["image_dir"], "grey16.png"))
    assert image.mode in ("I;16", "I")
    assert to_rgb_image(image).getpixel((5, 5)) == (128, 128, 128)  # round(32768 / 257)
    record = ImageRecord("g", os.path.join(photo_set["image_dir"], "grey16.png"), 64, 48, "t")
    (loaded,) = LoadImages()([record]).records
    assert np.asarray(loaded.image).mean() == pytest.approx(128, abs=1)
    (row,) = [row for row in two_runs[0][0] if row["image_id"] == "3"]
    assert row["image"]["bytes"] == open(record.file_name, "rb").read()  # stored as it is
