"""Image-level captions from COCO Captions (box = the whole image)."""
from __future__ import annotations

import os

import datasets

from .schema import CaptionBuilder, find_image, read_json

COCO_SPLITS = {"train": "train2017", "validation": "val2017"}


class CocoCaptionsForCaptioner(CaptionBuilder):
    """COCO Captions 2017 as image-level captioner data.

    Expects the public layout under ``data_dir``: ``annotations/captions_{train,val}2017.json``
    and the images in ``train2017/`` and ``val2017/`` (or ``images/train2017/``...).
    One example per caption; the box is the whole image ``[0, 0, width, height]``.
    """

    SOURCE = "coco_captions"

    def _split_generators(self, dl_manager):
        data_dir = self._data_dir()
        splits = []
        for split, folder in COCO_SPLITS.items():
            annotation_file = os.path.join(data_dir, "annotations", f"captions_{folder}.json")
            if os.path.isfile(annotation_file):
                splits.append(
                    datasets.SplitGenerator(
                        name=split, gen_kwargs={"annotation_file": annotation_file, "folder": folder, "split": split}
                    )
                )
        if not splits:
            raise ValueError(f"No annotations/captions_{{train,val}}2017.json under {data_dir!r}.")
        return splits

    def _generate_examples(self, annotation_file: str, folder: str, split: str):
        data_dir = self.config.data_dir
        rejects = self._reject_log(split)
        coco = read_json(annotation_file)
        images = {image["id"]: image for image in coco.get("images", [])}
        paths: dict = {}
        for annotation in coco.get("annotations", []):
            item = f"{os.path.basename(annotation_file)}#annotation={annotation.get('id')}"
            image = images.get(annotation.get("image_id"))
            caption = str(annotation.get("caption") or "").strip()
            if image is None:
                rejects.skip(item, f"unknown image: image_id {annotation.get('image_id')!r} not in images")
                continue
            if not caption:
                rejects.skip(item, "empty caption")
                continue
            width, height = image.get("width"), image.get("height")
            if not width or not height or width <= 0 or height <= 0:
                rejects.skip(item, f"invalid image size: {width}x{height}")
                continue
            if image["id"] not in paths:
                paths[image["id"]] = find_image(data_dir, image["file_name"], (folder, os.path.join("images", folder), ""))
            path = paths[image["id"]]
            if path is None:
                rejects.skip(item, f"missing image: {image['file_name']}")
                continue
            rejects.keep()
            yield str(annotation["id"]), self._example(path, image["id"], [0.0, 0.0, width, height], "image", caption)
        rejects.close()
