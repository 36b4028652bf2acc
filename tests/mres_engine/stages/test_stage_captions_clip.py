"""Stages 5 and 6: captions for every referent box, then the CLIPScore filter."""

import base64
import io
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from captioner.box_prompts import normalize_box
from dataset_scripts.masks import encode_mask
from mres_engine.options import StageOptions
from mres_engine.records import ImageRecord, new_referent
from mres_engine.stages.captions import Captions, OpenAICaptioner
from mres_engine.stages.clip_filter import CLIP_MODEL_ID, ClipFilter, box_crop, clip_score
from tiny_models.engine import FakeChatServer, build_tiny_clip


def _image(seed=0, size=(48, 40)):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def _record(image_id="img", sentences=None, seed=0):
    mask = encode_mask(np.ones((40, 48), bool))
    refs = [
        new_referent(f"{image_id}/o1", "object", "car", "car", [2, 3, 30, 20], mask),
        new_referent(f"{image_id}/o1/p0", "part", "wheel", "car", [4, 15, 8, 8], mask, parent_id=f"{image_id}/o1"),
        new_referent(f"{image_id}/o2", "object", "dog", "dog", [30, 10, 15, 25], mask),
    ]
    for ref, text in zip(refs, sentences or [[] for _ in refs]):
        ref["sentences"] = list(text)
    image = _image(seed)
    return ImageRecord(image_id, f"{image_id}.png", image.width, image.height, referents=refs, image=image)


def test_tiny_captioner_loaded_by_path_and_its_truncated_captions_rejected(tmp_path):
    from captioner import DenseCaptioner
    from tiny_models.captioner import save_tiny_captioner

    path = save_tiny_captioner(tmp_path / "captioner")
    stage = Captions.from_options(StageOptions(captioner=path, caption_max_new_tokens=2, device="cpu"))
    assert isinstance(stage.captioner, DenseCaptioner) and stage.captioner.max_new_tokens == 2
    out = stage([_record("a"), _record("b", seed=1)])
    assert out.records == []
    referent_rejects = [r for r in out.rejects if r.referent_id is not None]
    assert len(referent_rejects) == 6
    assert all(re.match(r"caption truncated at 2 tokens|empty caption", r.reason) for r in referent_rejects)
    assert [(r.image_id, r.reason) for r in out.rejects if r.referent_id is None] == [("a", "no referent left"), ("b", "no referent left")]


def _served_caption(messages):
    (content,) = messages
    image_part, text_part = content["content"]
    image = Image.open(io.BytesIO(base64.b64decode(image_part["image_url"]["url"].split(",", 1)[1])))
    # The served captioner is a Qwen3-VL by default: its box syntax is JSON bbox_2d on the 0-1000 scale.
    box = json.loads(re.search(r'\{"bbox_2d": \[[\d, ]+\]\}', text_part["text"]).group(0))["bbox_2d"]
    box = "({},{}),({},{})".format(*box)
    if "Name the object part" in text_part["text"]:
        return "wheel of car " + box
    if box == "({},{}),({},{})".format(*normalize_box([30, 10, 15, 25], (48, 40), scale=1000)):
        return ("a dog that never", "length")  # cut at max_tokens by the server
    return f"{image.width}x{image.height} thing {box}"


def test_served_captioner_gets_image_and_box_prompts_and_its_truncations_are_rejected():
    with FakeChatServer(_served_caption) as server:
        stage = Captions.from_options(StageOptions(captioner_url=server.url, captioner="served-captioner", caption_max_new_tokens=7))
        assert isinstance(stage.captioner, OpenAICaptioner)
        out = stage([_record("a")])
        assert server.requests[0]["body"]["max_tokens"] == 7 and server.requests[0]["body"]["model"] == "served-captioner"
    (record,) = out.records
    by_id = {r["referent_id"]: r for r in record.referents}
    car_box = "({},{}),({},{})".format(*normalize_box([2, 3, 30, 20], (48, 40), scale=1000))
    assert by_id["a/o1"]["sentences"] == [f"48x40 thing {car_box}"]
    assert by_id["a/o1/p0"]["sentences"][0].startswith("wheel of car (")
    assert "a/o2" not in by_id
    assert [(r.referent_id, r.reason) for r in out.rejects] == [("a/o2", "caption truncated at 7 tokens: 'a dog that never'")]


def test_served_captioner_box_syntax_is_an_option():
    prompts = []

    def reply(messages):
        prompts.append(messages[0]["content"][1]["text"])
        return "a thing"

    with FakeChatServer(reply) as server:
        stage = Captions.from_options(StageOptions(captioner_url=server.url, captioner_box_format="paper"))
        stage([_record("a")])
    assert prompts and all(re.search(r"\(\d+,\d+\),\(\d+,\d+\)", p) and "bbox_2d" not in p for p in prompts)
    with pytest.raises(ValueError, match="captioner_box_format='qwen2_5_vl' is not one of"):
        Captions.from_options(StageOptions(captioner_url="http://127.0.0.1:9", captioner_box_format="qwen2_5_vl"))


def test_clip_scores_match_clip_and_the_threshold_keeps_strictly_greater():
    model, processor = build_tiny_clip()
    records = [_record("a", [["a red car"], ["wheel of car"], ["a person standing"]]),
               _record("b", [["roof of house"], ["sail of boat"], ["leg of chair"]], seed=1),
               _record("c", [["the small blue boat"], ["window of house"], ["head of person"]], seed=2)]
    everything = ClipFilter(model, processor, min_score=-1.0)(records)
    assert everything.rejects == []
    # The stored cosine is CLIP's: logits_per_image / logit_scale for the crop and the first sentence.
    for record, source in zip(everything.records, records):
        for referent in record.referents:
            crop = box_crop(source.image, referent["bbox"])
            inputs = processor(text=referent["sentences"][:1], images=crop, return_tensors="pt", padding=True)
            with torch.no_grad():
                cos = (model(**inputs).logits_per_image / model.logit_scale.exp()).item()
            assert referent["scores"]["clip"] == pytest.approx(cos, abs=1e-5)
            assert referent["scores"]["clip_score"] == pytest.approx(2.5 * max(cos, 0.0), abs=1e-5)
    cosines = [r["scores"]["clip"] for rec in everything.records for r in rec.referents]
    assert max(cosines) > 0, "the tiny CLIP should give some positive cosine"
    threshold = float(clip_score(max(cosines))) / 2
    out = ClipFilter(model, processor, min_score=threshold)(records)
    kept = {r["referent_id"]: r for rec in out.records for r in rec.referents}
    expected = {r["referent_id"] for rec in everything.records for r in rec.referents if r["scores"]["clip_score"] > threshold}
    assert set(kept) == expected and 0 < len(expected) < len(cosines)
    image_rejects = {r.image_id for r in out.rejects if r.referent_id is None}
    assert image_rejects == {rec.image_id for rec in records} - {rec.image_id for rec in out.records}
    assert all(r.reason == "no referent left" for r in out.rejects if r.referent_id is None)
    for part in (r for r in kept.values() if r["granularity"] == "part"):
        assert part["parent_id"] is None or part["parent_id"] in kept  # no link to a removed object
    rejected = {r.referent_id for r in out.rejects if r.referent_id and not r.reason.startswith("sentence dropped")}
    assert rejected | set(kept) == {r["referent_id"] for rec in records for r in rec.referents}
    assert all(r.reason.startswith("CLIPScore") for r in out.rejects if r.referent_id in rejected)


def test_a_failing_sentence_is_dropped_and_reported_while_its_referent_stays():
    model, processor = build_tiny_clip()
    record = _record("a", [["a red car"], ["a red car", "window of house", "sail of boat"], ["a person standing"]], seed=3)
    scores = ClipFilter(model, processor).cosines([box_crop(record.image, [4, 15, 8, 8])] * 3,
                                                   ["a red car", "window of house", "sail of boat"])
    assert clip_score(scores).max() > clip_score(scores).min()
    threshold = float(clip_score(scores).max() + clip_score(scores).min()) / 2
    out = ClipFilter(model, processor, min_score=threshold)([record])
    passing = [t for t, s in zip(["a red car", "window of house", "sail of boat"], clip_score(scores)) if s > threshold]
    dropped = [r for r in out.rejects if r.reason.startswith("sentence dropped")]
    part = next(r for rec in out.records for r in rec.referents if r["referent_id"] == "a/o1/p0")
    assert part["sentences"] == passing and 1 <= len(passing) < 3
    assert len(dropped) == 3 - len(passing) and all(r.referent_id == "a/o1/p0" for r in dropped)
    assert part["scores"]["clip"] == pytest.approx(float(scores[["a red car", "window of house", "sail of boat"].index(passing[0])]), abs=1e-5)


def test_definition_names_model_and_threshold():
    stage = ClipFilter.from_options(StageOptions(clip_min_score=0.7))
    assert stage.model_id == CLIP_MODEL_ID and "0.7" in stage.definition and CLIP_MODEL_ID in stage.definition
    assert "2.5 × max(cos, 0)" in stage.definition
