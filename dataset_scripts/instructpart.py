"""InstructPart (Wan et al., ACL 2025) as an MRES dataset: task-oriented part segmentation, JSON + PNG masks.

Read as the release describes and its example loader reads it (``README.md`` of github.com/zifuwan/InstructPart:
the folder tree, the annotation structure and ``read_my_data``)::

    InstructPart/
      test/data_test.json   test/images/   test/masks/
      train/train{200,600,1200,1800}/data_train.json   .../images/   .../masks/   (nested subsets)
      all/data_all.json ...                                                          (train + test, not read)

A split file is a list of ``{"image_path": "knife_000953.jpg", "part_list": [{"object", "part", "affordance",
"action", "instruction": [six strings]}]}``. The six instructions, in order: 0 the human-written task
instruction, 1 its GPT-4 rewrite, 2 a "part of object" question, 3 the same with the affordance, 4 the plain
"part of object" name (``"blade of the knife"``), 5 the same with the affordance. Each (image, object, part) is
one sample named ``{stem}-{object}-{part}`` with spaces in the names as ``_`` (``knife_000953-knife-blade``);
the example loader lists ``images/{sample}.jpg``, and the mask is ``masks/{sample}.png`` (also read: the
image as ``images/{image_path}``, a mask saved as ``.jpg``). The release's README has no mask loader: the
mask's name is inferred from the images' naming.

Rows: one per ``image_path`` (its samples' images are one picture), a referent per part: granularity
``part``, ``category`` the part, ``object_category`` the object, ``parent_id`` null (objects are not
annotated), ``referent_id`` ``{split}/{sample}``. Which instruction becomes the sentence is the config:
``task`` (0, default), ``task_rewritten`` (1), ``part_of_object`` (4: the plain form), ``all`` (the six).
Splits: ``test`` (600 samples) and ``train`` (the ``train_size`` subset, 1800 by default). Not held by the
schema: ``affordance`` and ``action`` (they survive in instructions 3 and 5, config ``all``).

A bad entry (missing key, fewer than six instructions, missing or unreadable image or mask, mask not of the
image's size, empty mask, a sample named twice) stops the build naming the file, the entry and the key.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

import datasets

from .builder_base import MRESBuilder
from .features import make_referent
from .masks import mask_bbox
from .strict_rows import (
    RowError, check_sentences, conventions_markdown, mask_from_any,
    publish_built, read_image_at,
)

SOURCE = "instructpart"
INSTRUCTION_KINDS = ("task", "task_rewritten", "part_of_object_question", "part_of_object_affordance_question",
                     "part_of_object", "part_of_object_affordance")
TRAIN_SIZES = (200, 600, 1200, 1800)
HOMEPAGE = "https://github.com/zifuwan/InstructPart"
LICENSE = "mit"  # the repository's badge; the images keep their sources' terms
CITATION = """@inproceedings{wan2025instructpart,
  title     = {InstructPart: Task-Oriented Part Segmentation with Instruction Reasoning},
  author    = {Wan, Zifu and Xie, Yaqi and Zhang, Ce and Lin, Zhiqiu and Wang, Zihan and Stepputtis, Simon and
               Ramanan, Deva and Sycara, Katia},
  booktitle = {ACL},
  year      = {2025}
}"""

METRIC_CONVENTIONS = {
    "benchmark": "InstructPart",
    "source": f"{HOMEPAGE}: README.md (folder tree, annotation structure, read_my_data); the repository publishes no "
              "evaluator, and the paper's baseline is adapted from LISA, whose evaluator (train_ds.py validate) "
              "computes its gIoU and cIoU",
    "headline": "gIoU and cIoU on test (600 samples), per task: TRPS (task reasoning: the task instruction) and ORPS "
                "(oracle referring: the 'part of the object' name)",
    "metrics": {
        "gIoU": "mean over samples of the per-sample IoU (LISA's definition): our mIoU",
        "cIoU": "summed intersection / summed union over samples (LISA's definition): our oIoU",
    },
    "threshold": "LISA-style models binarise at logit 0 (probability 0.5); here each segmenter's stated threshold "
                 "applies (UniRES 0.35): pass --threshold 0.5 to binarise as LISA does",
    "target": "the part's mask, masks/{image stem}-{object}-{part}.png (spaces as '_'), pixel > 127 foreground",
    "empty_target": "none: every sample has a part mask (an empty one is refused when building)",
    "text": "config task = instruction 0 (TRPS, human-written), task_rewritten = 1 (GPT-4 rewrite), part_of_object "
            "= 4 (ORPS, 'blade of the knife'), all = the six; compare a figure with the paper's column of the same "
            "kind",
    "fields": "image_path -> the image (images/{image_path}, or the per-sample images/{sample}.jpg the loader "
              "lists), part -> category, object -> object_category, instruction[k] -> sentences; affordance and "
              "action are not held (they live on in instructions 3 and 5)",
    "splits": "test (test/data_test.json, 600 samples); train (train/train{200,600,1200,1800}/data_train.json, "
              "nested subsets; --train_size); all/data_all.json (train + test) is not read",
    "harness_options": {"resolution": "original", "empty_gt": "one_if_both_empty", "threshold": 0.5},
}

CONFIG_INSTRUCTIONS = {"task": (0,), "task_rewritten": (1,), "part_of_object": (4,), "all": tuple(range(6))}


@dataclass
class InstructPartConfig(datasets.BuilderConfig):
    """Args:
        instructions: indices (0-5) of the instructions kept as sentences.
        train_size: which nested training subset is ``train`` (200, 600, 1200 or 1800).
    """

    instructions: tuple[int, ...] = (0,)
    train_size: int = 1800

    def __post_init__(self):
        super().__post_init__()
        if not self.instructions or any(i not in range(6) for i in self.instructions):
            raise ValueError(f"instructions must be indices 0-5 ({INSTRUCTION_KINDS}), got {self.instructions!r}")
        if self.train_size not in TRAIN_SIZES:
            raise ValueError(f"train_size must be one of {TRAIN_SIZES}, got {self.train_size!r}")


class InstructPart(MRESBuilder):
    """InstructPart from its released folder (``data_dir`` holds ``test/`` and ``train/``)."""

    BUILDER_CONFIG_CLASS = InstructPartConfig
    BUILDER_CONFIGS = [InstructPartConfig(name=name, instructions=ids, description=f"sentences: instruction(s) {list(ids)}")
                       for name, ids in CONFIG_INSTRUCTIONS.items()]
    DEFAULT_CONFIG_NAME = "task"
    DEFAULT_WRITER_BATCH_SIZE = 100
    DESCRIPTION = ("InstructPart: task-oriented part segmentation: 2,400 part masks (1,800 train, 600 test) with "
                   "task instructions, their rewrites and plain 'part of object' names.")
    HOMEPAGE = HOMEPAGE
    LICENSE = LICENSE
    CITATION = CITATION

    def _split_files(self) -> dict[str, str]:
        """``{split: data file}`` of the splits present; ``FileNotFoundError`` naming where it looked."""
        if not self.config.data_dir:
            raise ValueError("pass data_dir=<the InstructPart folder, holding test/ and train/>")
        base = os.path.abspath(os.path.expanduser(self.config.data_dir))
        candidates = {
            "test": os.path.join(base, "test", "data_test.json"),
            "train": os.path.join(base, "train", f"train{self.config.train_size}", "data_train.json"),
        }
        found = {split: path for split, path in candidates.items() if os.path.isfile(path)}
        if not found:
            raise FileNotFoundError("no InstructPart split file; looked for: " + ", ".join(candidates.values()))
        return found

    def source_files(self, split: str) -> list[str]:
        """The annotation files a split is read from (for the evaluation's dataset identity)."""
        return [self._split_files()[split]]

    def _split_generators(self, dl_manager):
        return [datasets.SplitGenerator(name=split, gen_kwargs={"split": split, "path": path})
                for split, path in self._split_files().items()]

    def _generate_examples(self, split, path):
        rejects = self._reject_log()
        for key, row in read_instructpart_split(split, path, self.config.instructions):
            rejects.keep(len(row["referents"]))
            yield key, row


def sample_name(image_path: str, obj: str, part: str) -> str:
    """The release's per-sample name: ``knife_000953.jpg``, ``knife``, ``blade`` -> ``knife_000953-knife-blade``."""
    return f"{os.path.splitext(image_path)[0]}-{obj.replace(' ', '_')}-{part.replace(' ', '_')}"


def _first_file(candidates: list[str]) -> Optional[str]:
    return next((p for p in candidates if os.path.isfile(p)), None)


def read_instructpart_split(split: str, path: str, instructions=(0,)):
    """Yield ``(image_id, row)`` per image of one split file; :class:`RowError` on the first bad entry."""
    folder = os.path.dirname(path)
    try:
        with open(path, encoding="utf-8") as f:
            entries = json.load(f)
    except json.JSONDecodeError as err:
        raise RowError(path, "the file", "(json)", f"not valid JSON: {err}") from err
    if not isinstance(entries, list):
        raise RowError(path, "the file", "(json)", f"expected a list of entries, got {type(entries).__name__}")
    grouped: "OrderedDict[str, list]" = OrderedDict()
    seen: dict[str, str] = {}
    for i, entry in enumerate(entries):
        item = f"entry [{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("image_path"), str):
            raise RowError(path, item, "image_path", "missing or not a string")
        item = f"entry [{i}] ({entry['image_path']})"
        parts = entry.get("part_list")
        if not isinstance(parts, list) or not parts:
            raise RowError(path, item, "part_list", "expected a non-empty list")
        for j, part in enumerate(parts):
            for key in ("object", "part", "instruction"):
                if not isinstance(part, dict) or part.get(key) is None:
                    raise RowError(path, item, f"part_list[{j}].{key}", "missing")
            name = sample_name(entry["image_path"], str(part["object"]), str(part["part"]))
            if name in seen:
                raise RowError(path, item, f"part_list[{j}]", f"sample {name} is also {seen[name]}")
            seen[name] = f"{item} part_list[{j}]"
            grouped.setdefault(entry["image_path"], []).append((item, j, name, part))
    for image_path, samples in grouped.items():
        item0, j0, name0, _ = samples[0]
        image_file = _first_file([os.path.join(folder, "images", image_path)]
                                 + [os.path.join(folder, "images", f"{name}.jpg") for _, _, name, _ in samples])
        if image_file is None:
            raise RowError(path, item0, "image_path",
                           f"image not found: {os.path.join(folder, 'images', image_path)} nor images/{name0}.jpg")
        image_bytes, width, height = read_image_at(image_file, (path, item0, "image_path"))
        referents = []
        for item, j, name, part in samples:
            key = f"part_list[{j}]"
            texts = part["instruction"]
            if not isinstance(texts, list) or len(texts) < 6:
                raise RowError(path, item, f"{key}.instruction", f"expected the six instructions, got {texts!r:.80}")
            sentences = check_sentences([texts[k] for k in instructions], (path, item, f"{key}.instruction"))
            mask_file = _first_file([os.path.join(folder, "masks", f"{name}{ext}") for ext in (".png", ".jpg")])
            if mask_file is None:
                raise RowError(path, item, key, f"mask not found: {os.path.join(folder, 'masks', name + '.png')}")
            rle = mask_from_any(mask_file, height, width, folder, (path, item, f"{key} (mask)"))
            referents.append(make_referent(f"{split}/{name}", "part", str(part["part"]), str(part["object"]),
                                           mask_bbox(rle), rle, sentences))
        image_id = os.path.splitext(image_path)[0]
        yield image_id, {"image": {"bytes": image_bytes, "path": image_path}, "image_id": image_id, "width": width,
                         "height": height, "source": SOURCE, "referents": referents}


def build_instructpart(data_dir: str, output_dir: Optional[str], *, config_name: str = "task", train_size: int = 1800,
                       cache_dir: Optional[str] = None, max_shard_size: str = "256MB",
                       rejects_path: Optional[str] = None, **push) -> str:
    """Build InstructPart from ``data_dir`` and write ``output_dir`` (Parquet + card with source, licence, conventions)."""
    builder = InstructPart(config_name=config_name, data_dir=data_dir, train_size=train_size, cache_dir=cache_dir,
                           rejects_path=rejects_path)
    return publish_built(builder, output_dir, card_data(config_name), max_shard_size=max_shard_size, **push)


def card_data(config_name: str = "task") -> dict:
    """The dataset card's fields: source, licence, citation, and what the schema does not hold."""
    return {
        "pretty_name": f"InstructPart (MRES schema, {config_name})",
        "description": InstructPart.DESCRIPTION,
        "homepage": HOMEPAGE,
        "license": LICENSE,
        "citation": CITATION,
        "notes": (
            f"Converted by `dataset_scripts.instructpart` (config `{config_name}`: instruction(s) "
            f"{list(CONFIG_INSTRUCTIONS.get(config_name, ()))}). Not held by the schema: `affordance`, `action` "
            "(present in instructions 3 and 5), the object's mask (not annotated: `parent_id` is null). "
            "How the benchmark scores, beside ours:\n\n"
            + conventions_markdown(METRIC_CONVENTIONS)
        ),
        "tags": ["referring-expression-segmentation", "part-segmentation", "mres", "benchmark"],
    }
