"""The typed record: what travels between processes (the manifest fields) and what never does (the transient ones)."""

import dataclasses
import json

import pytest
from PIL import Image

from mres_engine.records import MANIFEST_FIELDS, TRANSIENT_FIELDS, ImageRecord


def test_transient_fields_are_named_and_never_reach_the_shard_input():
    assert TRANSIENT_FIELDS == ("image", "image_bytes", "fixes", "sam_embedding", "part_names")
    record = ImageRecord("7", "/images/a.png", 40, 30, "coco", boxes=[{"box_id": "1", "bbox": [1.0, 2.0, 3.0, 4.0], "category": "dog"}])
    flowing = dataclasses.replace(record, image=Image.new("RGB", (40, 30)), image_bytes=b"png", fixes=["size fixed"],
                                  sam_embedding=object(), part_names={"dog": ["ear"]})
    line = json.dumps(flowing.to_manifest(), sort_keys=True)
    assert sorted(json.loads(line)) == sorted(MANIFEST_FIELDS)
    assert ImageRecord.from_manifest(json.loads(line)) == record


def test_a_shard_input_line_with_an_unknown_field_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"image 7: not a manifest field: \['_image'\]"):
        ImageRecord.from_manifest({"image_id": "7", "file_name": "a.png", "width": 4, "height": 3, "_image": None})
