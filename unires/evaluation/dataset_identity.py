"""Which data a number was measured on: open a dataset by name, folder or Hub id, and say exactly what it is.

`open_split(dataset, split, data_dir=...)` returns the rows and their identity:

- `builder` and `config`: our builder and its config when a raw release is read (`refcoco_m` with `--data_dir`: the
  CRIS-layout release of RefCOCO_m, objects and parts; `refcoco`, `refcoco+`, `refcocog`: the REFER release;
  `instructpart`, `groundingsuite`, `reasonseg`: those benchmarks as released; `own_data`, or the folder itself as
  the dataset: a folder of one's own `metadata.jsonl` / COCO `annotations.json`, built on the fly), or the
  `pretty_name` and config of the dataset card of a published folder or Hub repository (`MRES-Synth`, `RefCOCO_m`,
  `refcoco-unc`, ...); for a raw release also `build`: the builder's summary line (kept, fixed, skipped) and its
  rejects file;
- `source`: `local` (with the folder) or `hub` (with the repository id and its revision sha when it can be known:
  from the Hub, or offline from the local cache's ref);
- `counts`: images, referents (objects, parts) and expressions (sentences) of what is evaluated;
- `files`: sha256 of every annotation / Parquet file read for the split (local data);
- `annotations_sha256`: a hash of the annotations themselves (image ids and sizes, referents with granularity,
  parent, sentences and RLE mask), the same whichever way the data was stored: two datasets that share a name but
  not their annotations (the MRES benchmark RefCOCO_m and moondream's 2025 re-segmentation of RefCOCO val, both
  called "RefCOCO-M") never share it.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from typing import Optional

# Shorthand names of raw releases → (builder, config).
RAW_RELEASES = {
    "refcoco_m": ("RefCOCOm", "default"),
    "refcoco": ("RefCOCO", "refcoco-unc"),
    "refcoco+": ("RefCOCO", "refcoco+-unc"),
    "refcocog": ("RefCOCO", "refcocog-umd"),
    "instructpart": ("InstructPart", "task"),
    "groundingsuite": ("GroundingSuiteEval", "default"),
    "reasonseg": ("ReasonSeg", "default"),
    "own_data": ("OwnData", "default"),
}
ALIASES = {"refcoco-m": "refcoco_m", "refcocom": "refcoco_m", "mres_synth": "mres-synth",
           "gseval": "groundingsuite", "groundingsuite-eval": "groundingsuite", "own-data": "own_data"}
SHORTHANDS = tuple(RAW_RELEASES) + ("mres-synth",)
# The builders of the benchmarks and of one's own data: (module, class); each has `source_files(split)`.
STRICT_BUILDERS = {
    "InstructPart": ("dataset_scripts.instructpart", "InstructPart"),
    "GroundingSuiteEval": ("dataset_scripts.groundingsuite", "GroundingSuiteEval"),
    "ReasonSeg": ("dataset_scripts.reasonseg", "ReasonSeg"),
    "OwnData": ("dataset_scripts.own_data", "OwnData"),
}


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_entries(paths, root: Optional[str] = None) -> list[dict]:
    entries = []
    for path in sorted(set(paths)):
        name = os.path.relpath(path, root) if root else path
        entries.append({"path": name, "bytes": os.path.getsize(path), "sha256": sha256_file(path)})
    return entries


def _card(folder: str) -> dict:
    """`pretty_name` and first config name of a dataset card (README.md YAML), when there is one."""
    path = os.path.join(folder, "README.md")
    if not os.path.isfile(path):
        return {}
    try:
        from huggingface_hub import DatasetCard

        data = DatasetCard.load(path).data.to_dict()
    except Exception:  # a card we cannot read says nothing about identity; the hashes still do
        return {}
    configs = data.get("configs") or [{}]
    return {"pretty_name": data.get("pretty_name"), "config": configs[0].get("config_name")}


def _hub_revision(repo_id: str, revision: Optional[str]) -> Optional[str]:
    """The commit sha of a Hub dataset: asked of the Hub when online, else read from the local cache's ref."""
    from huggingface_hub import constants

    if not constants.HF_HUB_OFFLINE:
        try:
            from huggingface_hub import HfApi

            return HfApi().dataset_info(repo_id, revision=revision).sha
        except Exception:
            pass
    ref = os.path.join(constants.HF_HUB_CACHE, "datasets--" + repo_id.replace("/", "--"), "refs", revision or "main")
    if os.path.isfile(ref):
        return open(ref, encoding="utf-8").read().strip()
    if revision and len(revision) == 40:
        return revision
    return None


def annotation_summary(rows, max_images: Optional[int] = None) -> tuple[dict, str]:
    """(counts, sha256 of the annotations) of the first `max_images` rows, reading no image."""
    columns = [c for c in ("image_id", "height", "width", "referents") if c in getattr(rows, "column_names", [])]
    if columns and hasattr(rows, "select_columns"):
        rows = rows.select_columns(columns)
    counts = {"images": 0, "referents": 0, "objects": 0, "parts": 0, "expressions": 0,
              "object_expressions": 0, "part_expressions": 0}
    digest = hashlib.sha256()
    for index, row in enumerate(rows):
        if max_images is not None and index >= max_images:
            break
        counts["images"] += 1
        record = [row.get("image_id"), row.get("height"), row.get("width")]
        for referent in row["referents"]:
            granularity = referent["granularity"]
            sentences = [s for s in (referent.get("sentences") or [])]
            counts["referents"] += 1
            counts["objects" if granularity == "object" else "parts"] += 1
            counts["expressions"] += len(sentences)
            counts[f"{granularity}_expressions"] = counts.get(f"{granularity}_expressions", 0) + len(sentences)
            mask = referent.get("mask") or {}
            record.append([referent.get("referent_id"), granularity, referent.get("parent_id"), sentences,
                           mask.get("size"), mask.get("counts")])
        digest.update(json.dumps(record, default=str, sort_keys=True).encode())
        digest.update(b"\n")
    return counts, digest.hexdigest()


def open_split(dataset: str, split: str, *, data_dir: Optional[str] = None, config: Optional[str] = None,
               revision: Optional[str] = None, cache_dir: Optional[str] = None):
    """(rows, identity) of `split` of `dataset`: a shorthand (`refcoco_m`, `refcoco`, `refcoco+`, `refcocog` with
    `data_dir` = the raw release; `instructpart`, `groundingsuite`, `reasonseg`, `own_data` likewise; `mres-synth`
    with `data_dir` = its folder), a folder of one's own data (`metadata.jsonl` or COCO `annotations.json`, built on
    the fly), a published folder, or a Hub id."""
    name = ALIASES.get(dataset.lower(), dataset.lower()) if dataset.lower() in (*SHORTHANDS, *ALIASES) else dataset
    if name in RAW_RELEASES:
        if not data_dir:
            raise ValueError(f"--dataset {dataset} reads the raw release: pass --data_dir (the downloaded folder), or "
                             "give --dataset the folder or Hub id of a published copy")
        if os.path.isdir(data_dir) and glob.glob(os.path.join(glob.escape(data_dir), "**", "*.parquet"), recursive=True):
            return _open_published(data_dir, split, revision=revision, shorthand=name)
        return _open_raw(name, split, data_dir, config=config, cache_dir=cache_dir)
    if name == "mres-synth":
        if not data_dir:
            raise ValueError("--dataset mres-synth needs --data_dir: the folder written by "
                             "`python -m dataset_scripts.mres_synth --out FOLDER` (or give that folder as --dataset)")
        return _open_published(data_dir, split, revision=revision, shorthand=name)
    if _is_own_data(dataset):
        return _open_raw("own_data", split, dataset, config=config, cache_dir=cache_dir)
    return _open_published(dataset, split, revision=revision)


def _is_own_data(path: str) -> bool:
    """A folder of one's own annotations (`metadata.jsonl` / `annotations.json`), not a published one (Parquet)."""
    from dataset_scripts.own_data import is_own_data_folder

    folder = os.path.expanduser(path)
    return (is_own_data_folder(folder)
            and not glob.glob(os.path.join(glob.escape(folder), "**", "*.parquet"), recursive=True))


def _open_published(name: str, split: str, *, revision: Optional[str] = None, shorthand: Optional[str] = None):
    from dataset_scripts.load import load_mres_dataset

    rows = load_mres_dataset([name], split)
    identity = {"name": shorthand or name, "split": split}
    if os.path.isdir(os.path.expanduser(name)):
        folder = os.path.abspath(os.path.expanduser(name))
        card = _card(folder)
        files = glob.glob(os.path.join(glob.escape(folder), "**", f"{split}-*.parquet"), recursive=True)
        identity.update(builder=card.get("pretty_name"), config=card.get("config"), source="local",
                        path=folder, files=_file_entries(files, folder))
    else:
        card = {}
        identity.update(builder=None, config=None, source="hub", repo_id=name,
                        revision=_hub_revision(name, revision))
    return rows, identity


def _open_raw(name: str, split: str, data_dir: str, *, config: Optional[str], cache_dir: Optional[str]):
    import importlib

    from dataset_scripts.strict_rows import prepare

    builder_name, default_config = RAW_RELEASES[name]
    if builder_name == "RefCOCOm":
        from dataset_scripts.cris_layout import resolve_cris_dirs
        from dataset_scripts.refcoco_m import RefCOCOm

        builder = RefCOCOm(data_dir=data_dir, cache_dir=cache_dir)
        annotation_dir, _, _ = resolve_cris_dirs(builder.config)
        files = [os.path.join(annotation_dir, f"{split}.json")]
    elif builder_name == "RefCOCO":
        from dataset_scripts.refcoco import RefCOCO

        builder = RefCOCO(config_name=config or default_config, data_dir=data_dir, cache_dir=cache_dir)
        files = [p for p in builder._refs_candidates(builder._base()) if os.path.isfile(p)][:1]
        files += [p for p in (os.path.join(os.path.dirname(f), "instances.json") for f in files) if os.path.isfile(p)]
    else:
        module, class_name = STRICT_BUILDERS[builder_name]
        builder_class = getattr(importlib.import_module(module), class_name)
        builder = builder_class(config_name=config or default_config, data_dir=data_dir, cache_dir=cache_dir)
        files = None  # the builder names them once the split is known to exist
    # The builder's cache is keyed on its config, not on the files: rebuild, so that the rows are the files hashed.
    # A bad row raises the builder's own error (file, item, key), not datasets' wrapper.
    prepare(builder)
    available = list(builder.info.splits or {})
    if available and split not in available:
        raise ValueError(f"{name} at {data_dir} has no split {split!r}; its splits: {sorted(available)}")
    if files is None:
        files = builder.source_files(split)
    rows = builder.as_dataset(split=split)
    identity = {"name": name, "split": split, "builder": builder_name, "config": builder.config.name,
                "source": "local", "path": os.path.abspath(data_dir),
                "files": _file_entries([f for f in files if os.path.isfile(f)], os.path.abspath(data_dir)),
                "build": {"summary": builder.last_summary, "rejects": builder.rejects_path}}
    return rows, identity


def _images(identity: dict) -> str:
    """"20 images", or "20 of 300 images" when --max_images evaluated part of the split."""
    images, total = identity.get("counts", {}).get("images", 0), identity.get("split_images")
    if identity.get("max_images") is not None and total is not None and images < total:
        return f"{images} of {total} images (--max_images {identity['max_images']})"
    if identity.get("max_images") is not None and total is None and images >= identity["max_images"]:
        return f"the first {images} images (--max_images; the split's size is not known)"
    return f"{images} images"


def describe(identity: dict) -> str:
    """One line: name, builder/config, split, counts, fingerprint."""
    counts = identity.get("counts", {})
    where = identity.get("repo_id") and f"{identity['repo_id']}@{(identity.get('revision') or 'unknown revision')[:12]}"
    parts = [f"{identity.get('builder') or identity.get('name')}"
             + (f" ({identity['config']})" if identity.get("config") else ""),
             f"split {identity.get('split')}", where or identity.get("path") or "",
             f"{_images(identity)}, {counts.get('referents', 0)} referents "
             f"({counts.get('objects', 0)} objects, {counts.get('parts', 0)} parts), "
             f"{counts.get('expressions', 0)} expressions",
             f"annotations sha256 {identity.get('annotations_sha256', '')[:16]}"]
    build = identity.get("build") or {}
    if build.get("summary"):  # what the builder kept, fixed and skipped (every split it built), and its rejects file
        parts.append(f"built: {build['summary']}")
    return "; ".join(part for part in parts if part)
