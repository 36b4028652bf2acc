"""A COCO/Objects365-style detection JSON with the odd cases a manifest reader meets (this module holds no test).

:func:`odd_detection_json` is deterministic (its own LCG, no ``random``), so the golden manifest
files in ``data/manifest_golden/`` -- written by the engine's first, ``json.load``-based reader --
stay valid on every Python; ``tests/mres_engine/test_manifest_streaming.py`` compares the
streaming reader's files with them byte for byte.
"""

from __future__ import annotations

import json

GOLDEN_DIR = "manifest_golden"
GOLDEN_NUM_SHARDS = 3
GOLDEN_IMAGE_DIR = "/data/images"  # never opened: the manifest step reads no image


def _lcg(seed: int):
    state = seed
    while True:
        state = (state * 6364136223846793005 + 1442695040888963407) % 2**64
        yield state >> 11


def odd_detection_json(annotations_first: bool = False) -> str:
    """The fixture's JSON text; ``annotations_first`` lists ``annotations`` before ``images`` (COCO allows either)."""
    rand = _lcg(21)

    def uniform(lo, hi):
        return lo + (hi - lo) * (next(rand) / 2**53)

    images = [
        {"id": 9, "file_name": "9.jpg", "width": 64, "height": 48},
        {"id": 10, "file_name": "sub/dir/10.jpg", "width": 64.0, "height": 48.7, "license": 3},  # float sizes
        {"id": 100, "file_name": "/abs/100.png", "width": 30, "height": 30},  # absolute file_name
        {"id": "b7", "file_name": "ünï cödé.jpg", "width": 20, "height": 10},  # string id, unicode name
        {"id": 0, "file_name": "0.jpg", "width": 5, "height": 5},  # no box at all
    ]
    categories = [{"id": 1, "name": "dog"}, {"id": 2, "name": "car"}, {"id": "7", "name": "str-keyed"},
                  {"id": 3, "name": "ünïcode \"quoted\" name", "supercategory": "x"}]
    annotations = [
        {"id": 1, "image_id": 9, "bbox": [-5, 10, 20, 40], "category_id": 1},  # clipped left and bottom
        {"id": 2, "image_id": 9, "bbox": [70, 5, 10, 10], "category_id": 1},  # outside: no area
        {"id": 3, "image_id": 9, "bbox": [5, 5, 0, 10], "category_id": 2},  # no width
        {"id": 4, "image_id": 8, "bbox": [5, 5, 5, 5], "category_id": 1},  # unknown image
        {"id": 5, "image_id": 9, "bbox": [5, 5, 5, 5], "category_id": 9},  # unknown category
        {"id": 6, "image_id": 9, "bbox": [1, 2, 3, 4], "category_id": 1, "area": 12, "iscrowd": 0,
         "segmentation": [[1, 2, 3, 4, 5, 6]]},
        {"id": 11, "image_id": 9, "bbox": [0.1, 0.2, 0.30000000000000004, 1e-07], "category_id": 2},  # float reprs
        {"id": 12, "image_id": 9, "bbox": [-0.0, 1e1, 1.5e+1, 2E0], "category_id": 3},  # -0.0 and exponents
        {"id": 7, "image_id": 10, "bbox": [63.9, 48.6, 5, 5], "category_id": 2},  # clipped to float height
        {"id": 8, "image_id": 10, "bbox": [0, 0, 64, 48], "category_id": "7"},  # string category id
        {"id": "a1", "image_id": 10, "bbox": [1, 1, 2, 2], "category_id": 1},  # string box id
        {"id": "10", "image_id": "10", "bbox": [2, 2, 2, 2], "category_id": 1},  # string image id matching an int one
        {"id": 13, "image_id": "b7", "bbox": [12345678901234567890, 0, 1, 1], "category_id": 1},  # huge: outside
        {"id": 14, "image_id": "b7", "bbox": [19.999999999999996, 9, 3, 3], "category_id": 3},
        {"image_id": 100, "bbox": [1, 1, 1, 1], "category_id": 2},  # no id: "None"
        {"id": 15, "image_id": 100, "bbox": [1, 1, 29, 29], "category_id": 2, "extra": {"nested": [1, {"a": None}]}},
    ]
    # A pseudo-random section: float boxes of every size, some reaching out of the image.
    next_box = 1000
    for number in range(40):
        image_id = 200 + (number * 7919) % 97
        width, height = 32 + int(uniform(0, 600)), 32 + int(uniform(0, 400))
        images.append({"id": image_id, "file_name": f"r/{image_id:012d}.jpg", "width": width, "height": height})
        for _ in range(int(uniform(0, 9))):
            x, y = uniform(-3, width * 0.7), uniform(-3, height * 0.7)  # a few reach out of the image
            annotations.append({"id": next_box, "image_id": image_id, "bbox": [x, y, uniform(0, width * 0.32), uniform(0, height * 0.32)],
                                "category_id": 1 + int(uniform(0, 3)), "iscrowd": 0, "area": uniform(0, 1e4)})
            next_box += int(uniform(1, 40))
    keys = ["info", "annotations", "images", "categories"] if annotations_first else ["info", "images", "annotations", "categories"]
    value = {"info": {"description": "odd cases"}, "images": images, "annotations": annotations, "categories": categories}
    return json.dumps({k: value[k] for k in keys}, ensure_ascii=False, indent=None)


def write_objects365_like(path, num_images: int, boxes_per_image: int = 14) -> int:
    """Objects365-shaped detection JSON (its image and annotation fields, 365 categories last); returns the box count."""
    num_boxes = 0
    with open(path, "w", encoding="utf-8") as f:
        f.write('{"images": [')
        for i in range(num_images):
            f.write(("," if i else "") + json.dumps({"height": 768, "id": i + 1, "license": 5, "width": 1024, "url": "",
                                                     "file_name": f"images/v2/patch{i % 51}/objects365_v2_{i + 1:08d}.jpg"}))
        f.write('], "annotations": [')
        for i in range(num_images):
            for j in range(boxes_per_image):
                box = [round(1.5 + 37.25 * j, 4), round(2.25 + 23.5 * j, 4), 30.125 + j, 20.0625 + i % 7]
                f.write(("," if num_boxes else "") + json.dumps({"id": num_boxes + 1, "iscrowd": 0, "isfake": 0, "area": 600.5,
                                                                 "isreflected": 0, "bbox": box, "image_id": i + 1,
                                                                 "category_id": 1 + (i * 31 + j) % 365}))
                num_boxes += 1
        f.write('], "categories": ' + json.dumps([{"name": f"category {c}", "id": c} for c in range(1, 366)]) + "}")
    return num_boxes
