"""Stage 3: part names from an LLM (local or OpenAI-compatible), validated, retried, cached; or a file."""

import json

import pytest

from mres_engine.backends import LocalChatModel, OpenAIChatClient
from mres_engine.options import StageOptions
from mres_engine.records import ImageRecord
from mres_engine.stages.part_vocabulary import (
    FilePartNames,
    LLMPartNames,
    PartNameCache,
    PartVocabulary,
    PartVocabularyError,
    parse_part_names,
)
from tiny_models.engine import FakeChatServer, build_tiny_causal_lm


def _records():
    def obj(i, category):
        return {"referent_id": f"img/o{i}", "granularity": "object", "category": category}

    return [ImageRecord("img", "img.png", 64, 64, referents=[obj(1, "car"), obj(2, "dog"), obj(3, "car")])]


def test_parse_accepts_json_and_fences_and_validates_names():
    assert parse_part_names('{"parts": ["Wheel", "door", "wheel", "front_bumper"]}', "car", 8) == ["wheel", "door", "front bumper"]
    assert parse_part_names('```json\n["ear", "tail"]\n```', "dog", 8) == ["ear", "tail"]
    assert parse_part_names('{"parts": ["ear", "dog", 3, "left hind leg paw", "tail!"]}', "dog", 8) == ["ear"]
    assert parse_part_names('{"parts": ["a b", "c d", "e f"]}', "x", 2) == ["a b", "c d"]
    with pytest.raises(PartVocabularyError, match="not JSON"):
        parse_part_names('Sure! A car has: {"parts": ["wheel"]}', "car", 8)
    with pytest.raises(PartVocabularyError, match="parts"):
        parse_part_names('{"names": ["wheel"]}', "car", 8)
    with pytest.raises(PartVocabularyError, match="no valid part name"):
        parse_part_names('{"parts": ["car", "???"]}', "car", 8)


def _server_answer(messages):
    category = messages[1]["content"].split("parts of a ")[1].split(" that")[0]
    if len(messages) == 2 and category == "car":  # chatty first answer, valid after the follow-up
        return 'Of course! Here they are: wheels, doors.'
    return json.dumps({"parts": {"car": ["wheel", "door"], "dog": ["ear", "tail", "leg"]}[category]})


def test_openai_endpoint_retries_chatty_answers_and_cache_prevents_second_requests(tmp_path):
    cache_path = tmp_path / "cache.json"
    with FakeChatServer(_server_answer) as server:
        source = LLMPartNames(OpenAIChatClient(server.url, "served-model", api_key="k"), PartNameCache(cache_path))
        out = PartVocabulary(source)(_records())
        assert out.rejects == []
        assert out.records[0].part_names == {"car": ["wheel", "door"], "dog": ["ear", "tail", "leg"]}
        assert len(server.requests) == 3  # car twice (chatty, then valid), dog once; the second car is not asked
        retry = server.requests[1]["body"]["messages"]
        assert retry[2]["role"] == "assistant" and "not usable" in retry[3]["content"]
        assert server.requests[0]["path"] == "/v1/chat/completions"
        assert server.requests[0]["headers"]["Authorization"] == "Bearer k"
        assert server.requests[0]["body"]["model"] == "served-model"

        # A rerun (new process: a new cache object reading the file) asks nothing.
        rerun = LLMPartNames(OpenAIChatClient(server.url, "served-model"), PartNameCache(cache_path))
        assert PartVocabulary(rerun)(_records()).records[0].part_names["car"] == ["wheel", "door"]
        assert len(server.requests) == 3 and rerun.requests == 0

        # Another model is another cache key.
        other = LLMPartNames(OpenAIChatClient(server.url, "other-model"), PartNameCache(cache_path))
        other.names_for("dog")
        assert len(server.requests) == 4
        # A worker whose cache object was made before another worker wrote an answer still finds it.
        early = LLMPartNames(OpenAIChatClient(server.url, "third-model"), PartNameCache(cache_path))
        LLMPartNames(OpenAIChatClient(server.url, "third-model"), PartNameCache(cache_path)).names_for("car")
        asked = len(server.requests)
        assert early.names_for("car") == ["wheel", "door"] and len(server.requests) == asked
    stored = json.loads(cache_path.read_text())
    assert stored[PartNameCache.key("dog", "other-model")] == ["ear", "tail", "leg"]
    assert len(stored) == 4


def test_tiny_local_lm_garbage_is_retried_then_rejected_per_object(tmp_path):
    model, tokenizer = build_tiny_causal_lm()
    client = LocalChatModel(model, tokenizer, model_id="tiny-lm")
    source = LLMPartNames(client, PartNameCache(tmp_path / "cache.json"), attempts=2, max_new_tokens=12)
    out = PartVocabulary(source)(_records())
    assert source.requests == 4  # two categories, two attempts each; the repeated car is not asked again
    assert out.records[0].part_names == {}
    assert [r.referent_id for r in out.rejects] == ["img/o1", "img/o2", "img/o3"]
    assert all(r.reason.startswith("parts not searched: no part vocabulary for") for r in out.rejects)
    assert "no usable answer from tiny-lm in 2 attempt(s)" in out.rejects[0].reason
    assert not (tmp_path / "cache.json").exists()  # failures are not cached: a rerun asks again


def test_vocabulary_file_replaces_the_llm(tmp_path):
    paco_like = tmp_path / "paco.json"
    paco_like.write_text(json.dumps({"categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "car:wheel"},
                                                    {"id": 3, "name": "car:side_mirror"}]}))
    out = PartVocabulary(FilePartNames(paco_like))(_records())
    assert out.records[0].part_names == {"car": ["wheel", "side mirror"]}
    assert [(r.referent_id, r.reason.split(": ")[-1]) for r in out.rejects] == [("img/o2", f"category not in {paco_like}")]
    simple = tmp_path / "vocab.json"
    simple.write_text(json.dumps({"Dog": ["ear", "tail"]}))
    stage = PartVocabulary.from_options(StageOptions(part_vocabulary="file", part_vocabulary_file=str(simple)))
    assert stage(_records()).records[0].part_names == {"dog": ["ear", "tail"]}


def test_options_name_what_is_missing():
    with pytest.raises(ValueError, match="--part_llm_url"):
        PartVocabulary.from_options(StageOptions(part_vocabulary="openai"))
    with pytest.raises(ValueError, match="--part_vocabulary_file"):
        PartVocabulary.from_options(StageOptions(part_vocabulary="file"))


def test_local_llm_loads_by_path_and_failures_name_the_model(tmp_path):
    model, tokenizer = build_tiny_causal_lm()
    model.save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    stage = PartVocabulary.from_options(StageOptions(part_vocabulary="local", part_llm=str(tmp_path / "lm"), device="cpu",
                                                     part_llm_attempts=1, part_vocabulary_cache=str(tmp_path / "cache.json")))
    stage.source.max_new_tokens = 8
    out = stage(_records()[:1])
    assert stage.source.requests == 2 and stage.source.client.model_name == str(tmp_path / "lm")
    assert all(f"no usable answer from {tmp_path / 'lm'} in 1 attempt(s)" in r.reason for r in out.rejects)
