"""Object-level captions from Visual Genome region descriptions."""
from __future__ import annotations

import os

import datasets

from .schema import CaptionBuilder, box_problem, find_image, iter_json_array

VG_IMAGE_FOLDERS = ("VG_100K", "VG_100K_2", "images", "")


class VisualGenomeRegionsForCaptioner(CaptionBuilder):
    """Visual Genome region descriptions as object-level captioner data.

    Expects the public layout under ``data_dir``: ``region_descriptions.json`` (a list of
    ``{"id", "regions": [{"region_id", "image_id", "phrase", "x", "y", "width", "height"}]}``)
    and the images ``{image_id}.jpg`` in ``VG_100K/`` or ``VG_100K_2/``. Visual Genome has no
    official split, so everything is ``train``. The annotation file (5.4M regions) is streamed one
    image entry at a time, never loaded whole.
    """

    SOURCE = "visual_genome"

    def _split_generators(self, dl_manager):
        annotation_file = os.path.join(self._data_dir(), "region_descriptions.json")
        if not os.path.isfile(annotation_file):
            raise ValueError(f"No region_descriptions.json under {self.config.data_dir!r}.")
        return [datasets.SplitGenerator(name="train", gen_kwargs={"annotation_file": annotation_file})]

    def _generate_examples(self, annotation_file: str):
        data_dir = self.config.data_dir
        rejects = self._reject_log("train")
        for entry in iter_json_array(annotation_file):
            path = None
            for region in entry.get("regions", []):
                item = f"region_id={region.get('region_id')}"
                image_id = region.get("image_id", entry.get("id"))
                phrase = str(region.get("phrase") or "").strip()
                bbox = [region.get(key) for key in ("x", "y", "width", "height")]
                problem = box_problem(bbox) or (None if phrase else "empty caption")
                if problem:
                    rejects.skip(item, problem)
                    continue
                if path is None:
                    path = find_image(data_dir, f"{image_id}.jpg", VG_IMAGE_FOLDERS) or ""
                if not path:
                    rejects.skip(item, f"missing image: {image_id}.jpg")
                    continue
                rejects.keep()
                yield str(region["region_id"]), self._example(path, image_id, bbox, "object", phrase)
        rejects.close()
