"""Part-level captions ("<part> of <object>") from PACO and PartImageNet."""
from __future__ import annotations

import glob
import os

import datasets

from .part_names import PACO_OBJECT_NAMES, PACO_PART_NAMES, PARTIMAGENET_OBJECT_NAMES, PARTIMAGENET_PART_NAMES, part_caption
from .schema import CaptionBuilder, box_problem, find_image, read_json


class PacoPartsForCaptioner(CaptionBuilder):
    """PACO-LVIS part annotations as part-level captioner data.

    Expects the public layout under ``data_dir``: ``annotations/paco_lvis_v1_{train,val,test}.json``
    (LVIS-style: ``images``, ``categories`` named ``"dog"`` for objects and ``"dog:ear"`` for
    parts, ``annotations`` with ``bbox`` [x, y, w, h], ``category_id`` and ``obj_ann_id``, the id
    of the object annotation a part belongs to) and the COCO 2017 images, found from each
    image's ``file_name`` under ``data_dir`` (``train2017/``, ``val2017/`` or ``images/``).
    """

    SOURCE = "paco"
    SPLITS = {"train": "train", "validation": "val", "test": "test"}

    def _split_generators(self, dl_manager):
        data_dir = self._data_dir()
        splits = []
        for split, name in self.SPLITS.items():
            annotation_file = os.path.join(data_dir, "annotations", f"paco_lvis_v1_{name}.json")
            if os.path.isfile(annotation_file):
                splits.append(datasets.SplitGenerator(name=split, gen_kwargs={"annotation_file": annotation_file, "split": split}))
        if not splits:
            raise ValueError(f"No annotations/paco_lvis_v1_{{train,val,test}}.json under {data_dir!r}.")
        return splits

    def _generate_examples(self, annotation_file: str, split: str):
        data_dir = self.config.data_dir
        rejects = self._reject_log(split)
        paco = read_json(annotation_file)
        images = {image["id"]: image for image in paco.get("images", [])}
        categories = {category["id"]: category["name"] for category in paco.get("categories", [])}
        annotations = paco.get("annotations", [])
        by_id = {annotation["id"]: annotation for annotation in annotations}
        paths: dict = {}
        for annotation in annotations:
            name = categories.get(annotation.get("category_id"), "")
            if ":" not in name:  # an object annotation; parts carry "object:part" names
                continue
            item = f"{os.path.basename(annotation_file)}#annotation={annotation.get('id')}"
            object_name, part_name = name.split(":", 1)
            parent = by_id.get(annotation.get("obj_ann_id"))
            if parent is not None:  # the parent's own category is the most specific object name
                object_name = categories.get(parent.get("category_id"), object_name).split(":")[0]
            problem = box_problem(annotation.get("bbox"))
            image = images.get(annotation.get("image_id"))
            if problem is None and image is None:
                problem = f"unknown image: image_id {annotation.get('image_id')!r} not in images"
            if problem:
                rejects.skip(item, problem)
                continue
            if image["id"] not in paths:
                file_name = image.get("file_name") or os.path.basename(image.get("coco_url", ""))
                paths[image["id"]] = find_image(data_dir, file_name, ("", "images", "train2017", "val2017"))
            if paths[image["id"]] is None:
                rejects.skip(item, f"missing image: {image.get('file_name')}")
                continue
            caption = part_caption(part_name, object_name, PACO_PART_NAMES, PACO_OBJECT_NAMES)
            rejects.keep()
            yield str(annotation["id"]), self._example(paths[image["id"]], image["id"], annotation["bbox"], "part", caption)
        rejects.close()


class PartImageNetForCaptioner(CaptionBuilder):
    """PartImageNet as part-level captioner data.

    Expects the public COCO-style layout under ``data_dir``: ``annotations/{split}.json`` (or
    ``annotations/{split}/{split}.json``) whose categories are parts named
    ``"<Supercategory> <Part>"`` (e.g. ``"Quadruped Head"``, supercategory ``"Quadruped"``), and
    images under ``images/{split}/`` (optionally in per-synset folders).
    """

    SOURCE = "partimagenet"
    SPLITS = {"train": "train", "validation": "val", "test": "test"}

    def _split_generators(self, dl_manager):
        data_dir = self._data_dir()
        splits = []
        for split, name in self.SPLITS.items():
            candidates = [os.path.join(data_dir, "annotations", f"{name}.json"), os.path.join(data_dir, "annotations", name, f"{name}.json")]
            annotation_file = next((path for path in candidates if os.path.isfile(path)), None)
            if annotation_file:
                splits.append(datasets.SplitGenerator(name=split, gen_kwargs={"annotation_file": annotation_file, "split": split, "folder": name}))
        if not splits:
            raise ValueError(f"No annotations/{{train,val,test}}.json under {data_dir!r}.")
        return splits

    def _generate_examples(self, annotation_file: str, split: str, folder: str):
        data_dir = self.config.data_dir
        rejects = self._reject_log(split)
        coco = read_json(annotation_file)
        images = {image["id"]: image for image in coco.get("images", [])}
        captions = {}
        for category in coco.get("categories", []):
            supercategory = category.get("supercategory") or ""
            part = category["name"]
            if supercategory and part.lower().startswith(supercategory.lower()):
                part = part[len(supercategory):]
            captions[category["id"]] = part_caption(part.strip() or category["name"], supercategory or "object",
                                                    PARTIMAGENET_PART_NAMES, PARTIMAGENET_OBJECT_NAMES)
        image_root = os.path.join(data_dir, "images", folder)
        paths: dict = {}
        for annotation in coco.get("annotations", []):
            item = f"{os.path.basename(annotation_file)}#annotation={annotation.get('id')}"
            problem = box_problem(annotation.get("bbox"))
            image = images.get(annotation.get("image_id"))
            if problem is None and image is None:
                problem = f"unknown image: image_id {annotation.get('image_id')!r} not in images"
            if problem is None and annotation.get("category_id") not in captions:
                problem = f"unknown category: {annotation.get('category_id')!r}"
            if problem:
                rejects.skip(item, problem)
                continue
            if image["id"] not in paths:
                path = find_image(image_root, image["file_name"])
                if path is None:  # images sorted in per-synset folders
                    matches = glob.glob(os.path.join(image_root, "*", os.path.basename(image["file_name"])))
                    path = matches[0] if matches else None
                paths[image["id"]] = path
            if paths[image["id"]] is None:
                rejects.skip(item, f"missing image: {image['file_name']}")
                continue
            caption = captions[annotation["category_id"]]
            rejects.keep()
            yield str(annotation["id"]), self._example(paths[image["id"]], image["id"], annotation["bbox"], "part", caption)
        rejects.close()
