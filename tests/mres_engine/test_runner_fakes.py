"""Fake stages for the runner's tests (this module holds no test).

The runner is tested apart from the models: after the real ``LoadImages``, a stage copies each
image's referents from the MRES-Synth ground truth (optionally with eroded masks), one rejects
some images and some referents with reasons, and one sleeps so that a SIGKILL lands mid-run.
``build`` is the ``--stages_factory`` of the CLI; it reads its settings from the environment,
which the worker processes inherit.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace

import numpy as np

from dataset_scripts.masks import decode_mask, encode_mask, mask_bbox
from mres_engine.stages.base import Reject, StageOutput
from mres_engine.stages.load_images import LoadImages

GROUND_TRUTH_ENV = "ENGINE_TEST_GROUND_TRUTH"  # JSON file {image_id: referents}
SLEEP_ENV = "ENGINE_TEST_SLEEP"  # seconds per batch in the slow stage
PERTURB_ENV = "ENGINE_TEST_PERTURB"  # "1": erode every mask by one pixel
REJECT_EVERY_ENV = "ENGINE_TEST_REJECT_EVERY"  # reject every N-th image (by manifest order of ids)


def write_ground_truth(rows, path) -> str:
    with open(path, "w", encoding="utf-8") as f:
        json.dump({row["image_id"]: row["referents"] for row in rows}, f)
    return str(path)


def _erode(rle):
    mask = decode_mask(rle)
    eroded = mask.copy()
    eroded[1:, :] &= mask[:-1, :]
    eroded[:-1, :] &= mask[1:, :]
    eroded[:, 1:] &= mask[:, :-1]
    eroded[:, :-1] &= mask[:, 1:]
    return encode_mask(eroded if eroded.any() else mask)


class FillFromGroundTruth:
    """Give each image the ground truth's referents, with made-up scores, as a perfect engine would."""

    name = "fill_from_ground_truth"
    definition = "referents copied from the MRES-Synth ground truth"

    def __init__(self, ground_truth: dict, perturb: bool = False):
        self.ground_truth = ground_truth
        self.perturb = perturb

    def __call__(self, records):
        out = StageOutput()
        for record in records:
            referents = []
            for i, ref in enumerate(self.ground_truth.get(record.image_id, [])):
                ref = dict(ref)
                if self.perturb:
                    ref["mask"] = _erode(ref["mask"])
                    ref["bbox"] = mask_bbox(ref["mask"])
                ref["scores"] = {"clip": 0.2 + (i % 7) / 20, "sam_iou": 0.9, "sam_stability": 0.96,
                                 "detector": 0.4 if ref["granularity"] == "part" else None}
                referents.append(ref)
            out.records.append(replace(record, referents=referents, image=None))
        return out


class RejectSome:
    """Reject every N-th image (by image id order) and every part named "window"."""

    name = "reject_some"

    def __init__(self, every: int):
        self.every = every

    def __call__(self, records):
        out = StageOutput()
        for record in records:
            index = int(record.image_id.rsplit("-", 1)[-1])
            if self.every and index % self.every == 0:
                out.rejects.append(Reject(record.image_id, self.name, f"unlucky image: index {index}"))
                continue
            kept = []
            for ref in record.referents:
                if ref["granularity"] == "part" and ref["category"] == "window":
                    out.rejects.append(Reject(record.image_id, self.name, "window part: not wanted", ref["referent_id"]))
                else:
                    kept.append(ref)
            out.records.append(replace(record, referents=kept))
        return out


class Slow:
    name = "slow"

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __call__(self, records):
        time.sleep(self.seconds)
        return StageOutput(records=list(records))


def build(stage_options=None):
    """The stages factory named on the command line: ``--stages_factory test_runner_fakes:build``."""
    with open(os.environ[GROUND_TRUTH_ENV], encoding="utf-8") as f:
        ground_truth = json.load(f)
    stages = [LoadImages(), FillFromGroundTruth(ground_truth, perturb=os.environ.get(PERTURB_ENV) == "1")]
    every = int(os.environ.get(REJECT_EVERY_ENV, "0"))
    if every:
        stages.append(RejectSome(every))
    seconds = float(os.environ.get(SLEEP_ENV, "0"))
    if seconds:
        stages.append(Slow(seconds))
    return stages


def scrambled_copy(rows, seed=0):
    """The rows with masks replaced by random blobs (for a far-off prediction)."""
    rng = np.random.default_rng(seed)
    out = []
    for row in rows:
        referents = []
        for ref in row["referents"]:
            h, w = ref["mask"]["size"]
            referents.append({**ref, "mask": encode_mask(rng.random((h, w)) > 0.5)})
        out.append({**row, "referents": referents})
    return out
