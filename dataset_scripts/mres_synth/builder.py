"""The MRES-Synth builder and the one-call helper that writes its Hub-layout folder."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import datasets
import numpy as np
from PIL import Image

from ..builder_base import MRESBuilder
from run_support.citation import UNIRES_CITATION
from ..features import make_referent
from ..masks import encode_mask, mask_bbox
from .expressions import object_descriptors, object_sentences, part_sentences
from .scene import Scene, generate_scene
from .vocabulary import CATEGORY_NAMES, COLOUR_NAMES, PART_NAMES

SPLITS = ("train", "validation", "test", "test_unseen", "train_unseen")
# The splits drawn from the held-out category–colour pairs only (`vocabulary.held_out_combinations`).
UNSEEN_SPLITS = ("test_unseen", "train_unseen")
_SPLIT_INDEX = {name: i for i, name in enumerate(SPLITS)}  # part of every image's seed
SOURCE = "mres-synth"

_DESCRIPTION = f"""MRES-Synth: a procedural, deterministic benchmark for multi-granularity referring
expression segmentation that needs no download. Scenes hold 2-5 objects from {len(CATEGORY_NAMES)} categories
({", ".join(CATEGORY_NAMES)}), each drawn from named parts, several of which are shared across
categories (wheel: car, bus, truck; window: house, car, bus; roof: house, car), in
{len(COLOUR_NAMES)} colours, two sizes and random positions; most scenes hold a distractor of the
same category or colour. Expressions name objects ("the red car on the left") or parts
("the wheels of the blue bus", "the roof of the small house"); a part expression refers to all
instances of that part on its object. Every sentence is checked to designate exactly one
referent in its scene. Masks are exact (from the rasteriser). The split `test_unseen` uses only
category-colour combinations that never occur in train, validation and test. The optional split
`train_unseen` (none by default) draws other images from those same held-out combinations: a
fine-tuning set for the pairs a model trained on `train` never saw, scored on `test_unseen`.
Part names: {", ".join(PART_NAMES)}."""


@dataclass
class MRESSynthConfig(datasets.BuilderConfig):
    """Generation parameters; identical parameters give identical bytes.

    Args:
        image_size: side of the square images in pixels.
        num_train, num_validation, num_test, num_test_unseen: images per split (0 omits a split).
        num_train_unseen: images of the fine-tuning split drawn from the held-out category–colour pairs, as
            ``test_unseen`` is but with other images (default 0: omitted).
        seed: base seed; image ``i`` of a split is drawn from ``(seed, split, i)`` alone, so a
            split's first images do not depend on how many are generated.
        min_objects, max_objects: objects per scene.
        max_sentences: sentences per referent are drawn in ``1..max_sentences``.
    """

    image_size: int = 96
    num_train: int = 10_000
    num_validation: int = 500
    num_test: int = 500
    num_test_unseen: int = 500
    num_train_unseen: int = 0
    seed: int = 0
    min_objects: int = 2
    max_objects: int = 5
    max_sentences: int = 3

    def __post_init__(self):
        super().__post_init__()
        self.validate()

    def validate(self) -> None:
        """Refuse sizes that cannot make a dataset. Run again by the builder: `datasets` sets a config's
        keyword overrides after ``__post_init__`` has run."""
        if self.image_size < 32:
            raise ValueError(f"image_size must be at least 32 pixels, got {self.image_size}")
        for split in SPLITS:
            if getattr(self, f"num_{split}") < 0:
                raise ValueError(f"num_{split} must be >= 0 (0 omits the split), got {getattr(self, f'num_{split}')}")


def scene_to_row(scene: Scene, image_id: str, rng: np.random.Generator, max_sentences: int = 3) -> dict[str, Any]:
    """One MRES_FEATURES row for ``scene``: referable objects and, for each, all its parts."""
    size = scene.size
    referents = []
    for obj in scene.objects:
        descriptors = object_descriptors(obj, scene)
        sentences = object_sentences(obj, scene, rng, max_sentences, descriptors)
        if not sentences:
            continue  # no unambiguous description exists for this object (it stays in the image)
        obj_id = f"{image_id}/o{obj.index}"
        rle = encode_mask(obj.mask)
        referents.append(_referent(obj_id, "object", obj.category, obj.category, None, rle, sentences))
        for part, part_mask in obj.part_masks.items():
            part_rle = encode_mask(part_mask)
            texts = part_sentences(obj, part, scene, rng, max_sentences, descriptors)
            if not part_mask.any() or not texts:
                continue
            referents.append(
                _referent(f"{obj_id}/{part.replace(' ', '_')}", "part", part, obj.category, obj_id, part_rle, texts)
            )
    buf = io.BytesIO()
    Image.fromarray(scene.image).save(buf, format="PNG", optimize=False, compress_level=6)
    return {
        "image": {"bytes": buf.getvalue(), "path": None},
        "image_id": image_id,
        "width": size,
        "height": size,
        "source": SOURCE,
        "referents": referents,
    }


def _referent(rid, granularity, category, object_category, parent_id, rle, sentences):
    # scores stay null: the masks are exact by construction
    return make_referent(rid, granularity, category, object_category, mask_bbox(rle), rle, sentences, parent_id=parent_id)


def scene_for(split: str, index: int, config: MRESSynthConfig) -> tuple[Scene, np.random.Generator]:
    """The scene of image ``index`` of ``split`` and the generator, positioned to draw its sentences."""
    if split not in _SPLIT_INDEX:
        raise ValueError(f"unknown split {split!r}; MRES-Synth splits are {SPLITS}")
    rng = np.random.default_rng([config.seed, _SPLIT_INDEX[split], index])
    scene = generate_scene(
        rng,
        config.image_size,
        min_objects=config.min_objects,
        max_objects=config.max_objects,
        combinations="unseen" if split in UNSEEN_SPLITS else "seen",
    )
    return scene, rng


def generate_row(split: str, index: int, config: MRESSynthConfig) -> dict[str, Any]:
    """Row ``index`` of ``split``, generated from ``(config.seed, split, index)`` alone."""
    scene, rng = scene_for(split, index, config)
    return scene_to_row(scene, f"{SOURCE}-{split}-{index:06d}", rng, config.max_sentences)


class MRESSynth(MRESBuilder):
    """MRES-Synth as a ``datasets`` builder.

    Example::

        builder = MRESSynth(image_size=96, num_train=2000, num_validation=200, cache_dir="/tmp/cache")
        builder.download_and_prepare()
        ds = builder.as_dataset()          # DatasetDict with train/validation/test/test_unseen
    """

    BUILDER_CONFIG_CLASS = MRESSynthConfig
    BUILDER_CONFIGS = [MRESSynthConfig(name="default", description="96 x 96 images, default split sizes")]
    DEFAULT_CONFIG_NAME = "default"
    DEFAULT_WRITER_BATCH_SIZE = 1000
    DESCRIPTION = _DESCRIPTION
    LICENSE = "apache-2.0"
    CITATION = UNIRES_CITATION

    def _split_generators(self, dl_manager):
        self.config.validate()
        return [
            datasets.SplitGenerator(name=split, gen_kwargs={"split": split})
            for split in SPLITS
            if getattr(self.config, f"num_{split}") > 0
        ]

    def _generate_examples(self, split: str):
        rejects = self._reject_log()
        for index in range(getattr(self.config, f"num_{split}")):
            row = generate_row(split, index, self.config)
            if not row["referents"]:
                rejects.skip(row["image_id"], "no object in the scene has an unambiguous description", split=split)
                continue
            rejects.keep()
            yield row["image_id"], row


def build_mres_synth(
    out_dir: Optional[str],
    image_size: int = 96,
    num_images: Optional[Mapping[str, int]] = None,
    seed: int = 0,
    *,
    cache_dir: Optional[str] = None,
    max_shard_size: str = "256MB",
    repo_id: Optional[str] = None,
    token: Optional[str] = None,
    private: bool = False,
    **config_kwargs: Any,
) -> datasets.DatasetDict:
    """Generate MRES-Synth and write its Hub-layout folder (Parquet shards + dataset card) to ``out_dir``.

    Args:
        out_dir: folder to write; ``load_dataset(out_dir, streaming=True)`` reads it afterwards. ``None`` (with
            ``repo_id``) writes into a temporary folder removed after the push.
        repo_id, token, private: push the folder to this Hub dataset repo (access checked before generating).
        image_size: image side in pixels.
        num_images: images per split, e.g. ``{"train": 10000, "validation": 500}``; splits not
            named keep the config defaults, a 0 omits the split.
        seed: base seed.
        cache_dir: the builder's Arrow cache (default: the datasets cache).
        **config_kwargs: other :class:`MRESSynthConfig` fields.

    Returns:
        The generated ``DatasetDict`` (Arrow-backed, from the builder's cache).
    """
    from run_support.hub import check_push_access
    from ..publish import publish

    counts = dict(num_images or {})
    negative = {split: n for split, n in counts.items() if int(n) < 0}
    if negative:
        raise ValueError(f"num_images must be >= 0 per split (0 omits the split), got {negative}")
    unknown = set(counts) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split(s) {sorted(unknown)} in num_images; MRES-Synth splits are {SPLITS}")
    kwargs = {f"num_{split}": int(n) for split, n in counts.items()}
    if repo_id is not None:  # fail before generating, not after
        repo_id = check_push_access(repo_id, out_dir, token=token, private=private, repo_type="dataset",
                                    option="--hub_dataset_id")
    builder = MRESSynth(cache_dir=cache_dir, image_size=image_size, seed=seed, **kwargs, **config_kwargs)
    builder.download_and_prepare()
    dataset = builder.as_dataset()
    cfg = builder.config
    usage = (
        "Regenerate exactly with\n\n```bash\npython -m dataset_scripts.mres_synth --output_dir DIR "
        f"--image_size {cfg.image_size} --seed {cfg.seed} "
        + " ".join(f"--num_{s} {getattr(cfg, f'num_{s}')}" for s in SPLITS)
        + "\n```"
    )
    publish(
        dataset,
        out_dir,
        repo_id=repo_id,
        token=token,
        private=private,
        max_shard_size=max_shard_size,
        card_data={
            "pretty_name": "MRES-Synth",
            "license": MRESSynth.LICENSE,
            "description": _DESCRIPTION,
            "citation": MRESSynth.CITATION,
            "usage": usage,
        },
    )
    return dataset
