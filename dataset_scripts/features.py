"""The one schema shared by every MRES builder: one row per image, a list of referents.

Every builder in :mod:`dataset_scripts` emits rows with :data:`MRES_FEATURES`, so that a model
trains on MRES-Synth, RefCOCO_m, the RefCOCO family or engine output without code changes.
An image is stored once however many referents it has (32M masks on 1M images must not copy an
image 32 times); :func:`dataset_scripts.flatten.flatten_referents` expands rows into training
samples.

Schema version history (bump on any change a reader could notice):

- ``1.0.0``: first release.
- ``1.1.0``: ``scores.clip_score`` (CLIPScore, next to the raw cosine ``scores.clip``).
"""

from datasets import Features, Image, List, Value

SCHEMA_VERSION = "1.1.0"

GRANULARITIES = ("object", "part")


def is_usable_sentence(sentence) -> bool:
    """A sentence names something only if it is a string with a non-blank character."""
    return isinstance(sentence, str) and bool(sentence.strip())


def sentences_of(referent) -> list[str]:
    """The usable sentences of a referent (a row's `referents` entry), in order, as stored."""
    return [s for s in referent.get("sentences") or [] if is_usable_sentence(s)]

# Scores the data engine attaches to what it generated; the whole struct is null when a human
# made the referent (RefCOCO family, RefCOCO_m) or when it is exact by construction (MRES-Synth).
SCORE_FIELDS = {
    "clip": "CLIP image-text cosine similarity between the crop of the referent's box and its "
    "first sentence (raw cosine).",
    "clip_score": "CLIPScore of the same pair, 2.5 × max(cos, 0) (Hessel et al., 2021); the engine's filter "
    "keeps sentences whose CLIPScore exceeds its threshold (0.5 by default, the paper's).",
    "sam_iou": "Segment Anything's predicted IoU for the chosen mask.",
    "sam_stability": "Segment Anything's stability score for the chosen mask.",
    "detector": "Open-vocabulary detector confidence for the part box (null for objects).",
}

RLE_FEATURE = {
    # COCO compressed RLE, exactly what pycocotools.mask.encode returns with counts as str.
    "size": List(Value("int32"), length=2),  # [height, width]
    "counts": Value("string"),
}

REFERENT_FEATURES = {
    "referent_id": Value("string"),
    "granularity": Value("string"),  # "object" | "part"
    "category": Value("string"),  # object category, or the part's name
    "object_category": Value("string"),  # the parent object's category (== category for objects)
    "parent_id": Value("string"),  # for a part: its object's referent_id; null for objects
    "bbox": List(Value("float32"), length=4),  # [x, y, w, h] in pixels
    "mask": RLE_FEATURE,
    "sentences": List(Value("string")),
    "scores": {name: Value("float32") for name in SCORE_FIELDS},
}

MRES_FEATURES = Features(
    {
        "image": Image(),
        "image_id": Value("string"),
        "width": Value("int32"),
        "height": Value("int32"),
        "source": Value("string"),
        "referents": List(REFERENT_FEATURES),
    }
)

# Columns of one flattened training sample (see flatten.flatten_referents).
FLAT_FEATURES = Features(
    {
        "image": Image(),
        "image_id": Value("string"),
        "referent_id": Value("string"),
        "sentence": Value("string"),
        "granularity": Value("string"),
        "category": Value("string"),
        "object_category": Value("string"),
        "mask": RLE_FEATURE,
        "parent_mask": RLE_FEATURE,
        "width": Value("int32"),
        "height": Value("int32"),
    }
)


def make_referent(
    referent_id: str,
    granularity: str,
    category: str,
    object_category: str,
    bbox,
    mask: dict,
    sentences=(),
    parent_id: str | None = None,
    scores: dict | None = None,
) -> dict:
    """One referent in the schema's shape (:data:`REFERENT_FEATURES`): the one constructor every builder
    and the data engine use, so that a referent is spelled out in one place.

    ``bbox`` is ``[x, y, w, h]`` in pixels; ``mask`` is a COCO RLE ``{size: [h, w], counts}`` (counts as
    ``str`` or ``bytes``); ``scores`` is null for human-made or exact referents, otherwise a dict of
    :data:`SCORE_FIELDS` (missing fields become null). A part's ``parent_id`` is its object's referent id;
    an object has none.
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"referent {referent_id}: granularity must be one of {GRANULARITIES}, got {granularity!r}")
    if granularity == "object" and parent_id is not None:
        raise ValueError(f"referent {referent_id}: an object has no parent_id, got {parent_id!r}")
    if len(bbox) != 4:
        raise ValueError(f"referent {referent_id}: bbox must be [x, y, w, h], got {bbox!r}")
    counts = mask["counts"]
    if scores is not None:
        unknown = set(scores) - set(SCORE_FIELDS)
        if unknown:
            raise ValueError(f"referent {referent_id}: unknown score fields {sorted(unknown)}; known: {list(SCORE_FIELDS)}")
        scores = {name: (None if scores.get(name) is None else float(scores[name])) for name in SCORE_FIELDS}
    return {
        "referent_id": str(referent_id),
        "granularity": granularity,
        "category": category,
        "object_category": object_category,
        "parent_id": None if parent_id is None else str(parent_id),
        "bbox": [float(v) for v in bbox],
        "mask": {"size": [int(v) for v in mask["size"]], "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts},
        "sentences": list(sentences),
        "scores": scores,
    }


def describe_schema() -> str:
    """Markdown description of the schema, used in every dataset card."""
    score_lines = "\n".join(f"  - `{name}`: {text}" for name, text in SCORE_FIELDS.items())
    return f"""Schema version `{SCHEMA_VERSION}`; one row per image:

| column | type | meaning |
|---|---|---|
| `image` | Image | the image (PNG/JPEG bytes embedded in the Parquet) |
| `image_id` | string | identifier, unique within the dataset |
| `width`, `height` | int32 | image size in pixels |
| `source` | string | where the image comes from (`coco2014`, `mres-synth`, `objects365`, ...) |
| `referents` | list of struct | every object or part that sentences refer to |

Each referent:

- `referent_id` (string), unique within the dataset;
- `granularity`: `object` or `part`;
- `category`: the object category, or the part's name for a part;
- `object_category`: the parent object's category (equal to `category` for an object);
- `parent_id`: the `referent_id` of a part's object; null for objects and for parts whose
  object is not annotated;
- `bbox`: `[x, y, w, h]` in pixels (float32);
- `mask`: COCO compressed RLE `{{size: [h, w], counts: str}}` (decode with
  `pycocotools.mask.decode` or `dataset_scripts.masks.decode_mask`);
- `sentences`: the referring expressions, each one alone identifies the referent;
- `scores`: null when a human made the referent or it is exact by construction, otherwise
{score_lines}
"""
