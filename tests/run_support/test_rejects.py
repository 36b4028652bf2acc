"""The one RejectLog: counts by action and reason, JSONL records, a summary that says what happened."""
import json

from run_support.rejects import RejectLog


def test_reject_log_counts_and_writes_jsonl(tmp_path):
    log = RejectLog(tmp_path / "sub" / "rejects.jsonl", stage="unit")
    log.skip("a", "empty box: [0, 0, 0, 1]")
    log.skip("b", "empty box: [0, 0, 1, 0]")
    log.skip("c", "missing image: x.jpg")
    log.keep(4)
    records = [json.loads(line) for line in (tmp_path / "sub" / "rejects.jsonl").read_text().splitlines()]
    assert [r["item_id"] for r in records] == ["a", "b", "c"]
    assert {r["stage"] for r in records} == {"unit"} and {r["action"] for r in records} == {"skipped"}
    assert log.skipped == 3 and log.reasons["empty box"] == 2
    summary = log.close(log=False)
    assert summary.startswith("[unit] kept 4, fixed 0, skipped 3")
    assert "empty box: 2" in summary and "missing image: 1" in summary


def test_fixed_counts_items_not_fix_records(tmp_path):
    log = RejectLog(tmp_path / "rejects.jsonl")
    log.fix("ref-1", "bbox clipped to the image")
    log.fix("ref-1", "blank sentence removed", sentence_index=2)
    log.fix("ref-2", "bbox clipped to the image")
    log.keep(2)
    assert log.fixed == 2
    assert len((tmp_path / "rejects.jsonl").read_text().splitlines()) == 3
    assert log.summary().startswith("kept 2, fixed 2, skipped 0")


def test_append_keeps_earlier_records(tmp_path):
    path = tmp_path / "rejects.jsonl"
    with RejectLog(path, stage="coco/train") as first:
        first.skip("x", "missing image: x.jpg")
    with RejectLog(path, stage="vg/train", append=True) as second:
        second.skip("y", "empty caption")
    stages = [json.loads(line)["stage"] for line in path.read_text().splitlines()]
    assert stages == ["coco/train", "vg/train"]


def test_a_log_with_a_file_streams_and_keeps_only_counters(tmp_path):
    path = tmp_path / "rejects.jsonl"
    log = RejectLog(path, stage="shard")
    for i in range(1000):
        log.skip(f"img-{i}", "missing image: x.jpg", level="image")
        log.skip(f"img-{i}/o1", "low SAM IoU: 0.1", level="referent")
    log.skip("n", "no level at all")
    assert log.records == []  # nothing held in memory: every record is in the file
    assert log.skipped_by_level == {"image": 1000, "referent": 1000, None: 1}
    log.close(log=False)
    assert len(path.read_text().splitlines()) == 2001
    memory = RejectLog(stage="unit")  # no file: records are kept for the caller
    memory.skip("a", "empty box")
    assert [r["item_id"] for r in memory.records] == ["a"]


def test_fixes_counted_per_record_hold_no_item_ids(tmp_path):
    log = RejectLog(tmp_path / "rejects.jsonl", distinct_fixes=False)
    for i in range(100):
        log.fix(f"box-{i}", "box clipped to the image")
    log.keep(100)
    assert log.fixed == 100 and not log._fixed_items


def test_reasons_name_files_relative_to_the_folder(tmp_path):
    """A published reject log names no folder of the machine that built it (issue 27, case 4)."""
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    (tmp_path / "link").symlink_to(images)
    log = RejectLog(tmp_path / "rejects.jsonl", relative_to=str(tmp_path / "link"))
    log.skip("a", f"missing image: {images}/sub/missing.png")
    log.skip("b", f"corrupt image: {tmp_path}/link/sub/x.jpg: image file is truncated")
    log.skip("c", f"missing image: {tmp_path}/elsewhere/y.png")  # not under the folder: as it was
    log.fix("d", "box clipped to the image")
    log.close(log=False)
    reasons = [json.loads(line)["reason"] for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert reasons == ["missing image: sub/missing.png", "corrupt image: sub/x.jpg: image file is truncated",
                       f"missing image: {tmp_path}/elsewhere/y.png", "box clipped to the image"]
