"""Captioning a JSONL of boxes: written as it goes, resumed after an interruption with nothing lost or repeated."""
import json

import pytest

from captioner import DenseCaptioner, load_base_model
from captioner.caption_files import caption_jsonl
from run_support.rejects import RejectLog


class _KilledAfter:
    """A captioner whose run stops (as if killed) after ``n`` captions."""

    def __init__(self, captioner, n):
        self.captioner, self.n = captioner, n

    def caption_dataset(self, rows, rejects, chunk_size):
        for count, result in enumerate(self.captioner.caption_dataset(rows, rejects, chunk_size=chunk_size)):
            if count == self.n:
                raise KeyboardInterrupt
            yield result


@pytest.fixture(scope="module")
def captioner(base_dir):
    return DenseCaptioner(*load_base_model(base_dir), max_new_tokens=3)


@pytest.fixture
def boxes_file(rows, tmp_path):
    lines = [json.dumps({"image": rows[i % 2]["image"], "image_id": str(i % 2), "bbox": [i, i, 10 + i, 8], "granularity": "object"})
             for i in range(6)]
    lines.insert(3, "{not json")
    path = tmp_path / "boxes.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_an_interrupted_run_resumes_without_losing_or_repeating(captioner, boxes_file, tmp_path):
    fresh = tmp_path / "fresh.jsonl"
    assert caption_jsonl(captioner, str(boxes_file), str(fresh), RejectLog(), chunk_size=2) == 6
    expected = _records(fresh)
    assert [r["index"] for r in expected] == [0, 1, 2, 4, 5, 6]  # line 3 is not JSON: skipped, counted

    resumed = tmp_path / "resumed.jsonl"
    with pytest.raises(KeyboardInterrupt):
        caption_jsonl(_KilledAfter(captioner, 3), str(boxes_file), str(resumed), RejectLog(), chunk_size=2)
    assert len(_records(resumed)) == 3  # written as they were made
    with open(resumed, "a") as handle:
        handle.write('{"index": 4, "capt')  # a line cut off by the kill
    rejects = RejectLog()
    assert caption_jsonl(captioner, str(boxes_file), str(resumed), rejects, chunk_size=2) == 3
    assert _records(resumed) == expected
    assert rejects.kept == 3 and rejects.skipped == 1


def test_an_output_that_is_not_captions_is_refused(captioner, boxes_file, tmp_path):
    output = tmp_path / "other.jsonl"
    output.write_text('{"something": "else"}\n')
    with pytest.raises(ValueError, match="not a caption record"):
        caption_jsonl(captioner, str(boxes_file), str(output))


def test_rerunning_the_command_lists_each_reject_once(base_dir, boxes_file, tmp_path):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "examples" / "caption_boxes.py"
    spec = importlib.util.spec_from_file_location("examples_caption_boxes", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    output, rejects = tmp_path / "captions.jsonl", tmp_path / "rejects.jsonl"
    argv = ["--model", str(base_dir), "--boxes_file", str(boxes_file), "--output", str(output),
            "--rejects_file", str(rejects), "--max_new_tokens", "2"]
    for _ in range(2):  # the second run has nothing left to caption but meets the bad line again
        module.main(argv)
        assert [(r["item_id"], r["action"]) for r in _records(rejects)] == [("line 4", "skipped")]
    assert [r["index"] for r in _records(output)] == [0, 1, 2, 4, 5, 6]
