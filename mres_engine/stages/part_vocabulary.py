"""Stage 3, part vocabulary: the part names to look for in each object category.

Names come from an LLM -- a local transformers causal LM (:class:`~mres_engine.backends.LocalChatModel`,
default :data:`~mres_engine.options.DEFAULT_PART_LLM`) or any OpenAI-compatible chat endpoint
(:class:`~mres_engine.backends.OpenAIChatClient`) -- asked for JSON, validated, and asked again when the answer is
chatty or invalid. Answers are cached in a JSON file keyed by (prompt version, model, category),
so a rerun asks nothing twice. A user vocabulary file (e.g. PACO's object-part list) replaces
the LLM (:class:`FilePartNames`). Nothing here ships a vocabulary of its own.

The stage sets each record's ``part_names`` ({object category: [part names]}) for the
part-mask stage. A category with no usable answer leaves its objects without parts: each such
object is reported as a :class:`~mres_engine.stages.base.Reject` of level ``"parts"`` whose reason
starts with ``"parts not searched"`` (the object itself stays in the record and is not a reject).
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from dataclasses import replace

from ..backends import ChatClient, LocalChatModel, OpenAIChatClient
from ..options import StageOptions, resolve_device, resolve_dtype
from ..records import ImageRecord
from .base import Reject, StageOutput

logger = logging.getLogger(__name__)

# Bump whenever the prompt or the validation changes: cached answers of another version are not reused.
PROMPT_VERSION = "parts-v1"
SYSTEM_PROMPT = "You name the visible physical parts of objects. You answer with JSON only."
USER_PROMPT = (
    "List the distinct visible parts of a {category} that a person could point at in a photo. "
    'Answer with a JSON object {{"parts": [...]}} holding 1 to {max_parts} short lowercase part names '
    "(one to three words each, singular, no object name), and nothing else."
)
RETRY_PROMPT = 'That answer was not usable ({why}). Answer with the JSON object only, e.g. {{"parts": ["{example}"]}}.'
_NAME = re.compile(r"^[a-z][a-z' -]*[a-z]$")


class PartVocabularyError(ValueError):
    """No usable part list for a category."""


def parse_part_names(text: str, category: str, max_parts: int) -> list[str]:
    """The part names in an LLM answer: a JSON object ``{"parts": [...]}`` or a JSON list, optionally
    in a Markdown code fence. Names are lower-cased and de-duplicated; invalid ones (not 1-3 words
    of letters, or the category itself) are dropped.

    Raises:
        PartVocabularyError: no JSON, the wrong shape, or no valid name at all.
    """
    stripped = text.strip()
    fence = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", stripped, flags=re.S)
    if fence:
        stripped = fence.group(1)
    try:
        data = json.loads(stripped)
    except json.JSONDecodeError:
        raise PartVocabularyError(f"not JSON: {text[:80]!r}") from None
    if isinstance(data, dict):
        data = data.get("parts")
    if not isinstance(data, list):
        raise PartVocabularyError('JSON without a "parts" list')
    names: list[str] = []
    for item in data:
        if not isinstance(item, str):
            continue
        name = " ".join(item.lower().replace("_", " ").split())
        if _NAME.match(name) and len(name.split()) <= 3 and name != category.lower() and name not in names:
            names.append(name)
    if not names:
        raise PartVocabularyError(f"no valid part name in {data!r:.80}")
    return names[:max_parts]


class PartNameCache:
    """LLM answers in a JSON file, keyed by (prompt version, model, category).

    Writes go to a temporary file renamed over the cache after merging what is on disk, so that
    workers sharing the file neither corrupt it nor lose each other's entries (at worst one
    category is asked twice by two workers at the same moment).
    """

    def __init__(self, path: str | os.PathLike | None):
        self.path = os.fspath(path) if path is not None else None
        self.entries: dict[str, list[str]] = self._read()

    @staticmethod
    def key(category: str, model: str, version: str = PROMPT_VERSION) -> str:
        return json.dumps([version, model, category])

    def _read(self) -> dict[str, list[str]]:
        if self.path is None or not os.path.exists(self.path):
            return {}
        with open(self.path, encoding="utf-8") as f:
            return json.load(f)

    def get(self, category: str, model: str) -> list[str] | None:
        """The cached names; on a miss the file is read again, since another worker may have asked meanwhile."""
        key = self.key(category, model)
        if key not in self.entries and self.path is not None:
            self.entries = {**self._read(), **self.entries}
        return self.entries.get(key)

    def put(self, category: str, model: str, names: list[str]) -> None:
        self.entries[self.key(category, model)] = names
        if self.path is None:
            return
        self.entries = {**self._read(), **self.entries}
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".part-cache-", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self.entries, f, indent=1, sort_keys=True)
        os.replace(tmp, self.path)


class LLMPartNames:
    """Part names from a :class:`ChatClient`, validated, retried and cached.

    Args:
        client: the LLM.
        cache: a :class:`PartNameCache` (in memory when None).
        max_parts: at most this many names per category.
        attempts: questions per category (the first plus follow-ups naming what was wrong).
        max_new_tokens: longest answer.
    """

    def __init__(self, client: ChatClient, cache: PartNameCache | None = None, max_parts: int = 8, attempts: int = 3,
                 max_new_tokens: int = 128):
        self.client = client
        self.cache = cache if cache is not None else PartNameCache(None)
        self.max_parts = max_parts
        self.attempts = max(1, attempts)
        self.max_new_tokens = max_new_tokens
        self.requests = 0

    def names_for(self, category: str) -> list[str]:
        cached = self.cache.get(category, self.client.model_name)
        if cached is not None:
            return cached
        messages = [{"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": USER_PROMPT.format(category=category, max_parts=self.max_parts)}]
        why = ""
        for _ in range(self.attempts):
            self.requests += 1
            answer = self.client.chat(messages, max_tokens=self.max_new_tokens)
            try:
                names = parse_part_names(answer, category, self.max_parts)
            except PartVocabularyError as err:
                why = str(err)
                messages += [{"role": "assistant", "content": answer},
                             {"role": "user", "content": RETRY_PROMPT.format(why=why, example="handle")}]
                continue
            self.cache.put(category, self.client.model_name, names)
            return names
        raise PartVocabularyError(f"no usable answer from {self.client.model_name} in {self.attempts} attempt(s) (last: {why})")


class FilePartNames:
    """Part names from a user file instead of an LLM.

    Accepted JSON: ``{object category: [part names]}``; a list of ``"object:part"`` names; or a
    COCO-style file whose ``categories`` include ``"object:part"`` names (PACO's annotation files).
    Category lookup ignores case and ``_`` vs space.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        with open(self.path, encoding="utf-8") as f:
            data = json.load(f)
        if isinstance(data, dict) and "categories" in data:
            data = [c["name"] for c in data["categories"]]
        vocabulary: dict[str, list[str]] = {}
        if isinstance(data, dict):
            items = [(obj, part) for obj, parts in data.items() for part in parts]
        elif isinstance(data, list):
            items = [tuple(name.split(":", 1)) for name in data if isinstance(name, str) and ":" in name]
        else:
            raise ValueError(f"{self.path}: expected a JSON object or list of part names, got {type(data).__name__}")
        for obj, part in items:
            names = vocabulary.setdefault(self._norm(obj), [])
            if self._norm(part) not in names:
                names.append(self._norm(part))
        if not vocabulary:
            raise ValueError(f"{self.path}: no (object, part) pair found")
        self.vocabulary = vocabulary

    @staticmethod
    def _norm(name: str) -> str:
        return " ".join(name.lower().replace("_", " ").split())

    def names_for(self, category: str) -> list[str]:
        names = self.vocabulary.get(self._norm(category))
        if names is None:
            raise PartVocabularyError(f"category not in {self.path}")
        return names


class PartVocabulary:
    """Attach the part names of each object's category to the record (``part_names``).

    Args:
        source: anything with ``names_for(category) -> list[str]`` raising
            :class:`PartVocabularyError` (an :class:`LLMPartNames` or a :class:`FilePartNames`).
    """

    name = "part_vocabulary"

    def __init__(self, source):
        self.source = source
        self._failures: dict[str, str] = {}

    @classmethod
    def from_options(cls, options: StageOptions) -> "PartVocabulary":
        if options.part_vocabulary == "file":
            if not options.part_vocabulary_file:
                raise ValueError("--part_vocabulary file needs --part_vocabulary_file")
            return cls(FilePartNames(options.part_vocabulary_file))
        if options.part_vocabulary == "openai":
            if not options.part_llm_url:
                raise ValueError("--part_vocabulary openai needs --part_llm_url (e.g. http://localhost:8000/v1)")
            client = OpenAIChatClient(options.part_llm_url, options.part_llm, os.environ.get(options.part_llm_api_key_env))
        elif options.part_vocabulary == "local":
            device = resolve_device(options.device)
            client = LocalChatModel(model_id=options.part_llm, device=device, dtype=resolve_dtype(options.dtype, device))
        else:
            raise ValueError(f"Unknown part_vocabulary {options.part_vocabulary!r}")
        return cls(LLMPartNames(client, PartNameCache(options.part_vocabulary_cache), options.max_parts_per_category,
                                options.part_llm_attempts))

    def names_for(self, category: str) -> list[str] | None:
        """The names for ``category``, or None (the reason in ``failures``) when there are none."""
        if category in self._failures:
            return None
        try:
            return self.source.names_for(category)
        except PartVocabularyError as err:
            self._failures[category] = str(err)
            logger.warning("no part vocabulary for %r: %s", category, err)
            return None

    def __call__(self, records: list[ImageRecord]) -> StageOutput:
        out = StageOutput()
        for record in records:
            vocabulary = {}
            for referent in record.referents:
                if referent["granularity"] != "object":
                    continue
                category = referent["category"]
                if category not in vocabulary:
                    vocabulary[category] = self.names_for(category)
                if vocabulary[category] is None:
                    reason = f"parts not searched: no part vocabulary for {category!r}: {self._failures[category]}"
                    out.rejects.append(Reject(record.image_id, self.name, reason, referent["referent_id"], level="parts"))
            out.records.append(replace(record, part_names={c: n for c, n in vocabulary.items() if n}))
        return out
