"""The runner in one process: sharding, the exactly-once files, rejects, stats, the card, GPU pinning, executors."""

import dataclasses
import glob
import json
import os

import pyarrow.parquet as pq
import pytest
from datasets import load_dataset

from dataset_scripts.features import MRES_FEATURES
from mres_engine import layout
from mres_engine.executors import FinalizeRun, PinnedLocalPipelineExecutor, build_executor, build_slurm_finalizer, pin_process_to_gpu
from mres_engine.finalize import check_exactly_once
from mres_engine.options import RunnerOptions
from mres_engine.progress import RunProgress, write_progress
from mres_engine.readers.manifest import shard_slice
from mres_engine.records import ImageRecord
from mres_engine.run import run_engine
from mres_engine.shard import process_shard, run_stages
from mres_engine.stages.base import Reject, StageOutput
from mres_engine.stats import RunStats
from tiny_models.engine import write_synth_detection_set
from test_runner_fakes import GROUND_TRUTH_ENV, REJECT_EVERY_ENV, build, write_ground_truth

NUM_IMAGES = 12


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("runner")
    annotations, image_dir, rows = write_synth_detection_set(root / "set", num_images=NUM_IMAGES, split="train")
    return {"root": root, "annotations": annotations, "image_dir": image_dir, "rows": rows,
            "ground_truth": write_ground_truth(rows, root / "ground_truth.json")}


@pytest.fixture
def fake_env(synth, monkeypatch):
    monkeypatch.setenv(GROUND_TRUTH_ENV, synth["ground_truth"])
    monkeypatch.setenv(REJECT_EVERY_ENV, "4")


def _options(synth, out, **overrides):
    values = dict(annotations=synth["annotations"], image_dir=synth["image_dir"], output_dir=str(out), num_shards=3,
                  workers=1, source="mres-synth", stages_factory="test_runner_fakes:build", progress=False,
                  images_per_batch=2)
    values.update(overrides)
    return RunnerOptions(**values)


@pytest.fixture(scope="module")
def finished(synth, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(GROUND_TRUTH_ENV, synth["ground_truth"])
        mp.setenv(REJECT_EVERY_ENV, "4")
        out = tmp_path_factory.mktemp("finished") / "out"
        summary = run_engine(_options(synth, out))
    return out, summary


def test_shards_are_a_pure_function_of_the_manifest_and_the_count():
    for n in (0, 1, 7, 100):
        for shards in (1, 3, 8):
            slices = [shard_slice(n, rank, shards) for rank in range(shards)]
            assert slices[0][0] == 0 and slices[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(slices, slices[1:]))  # contiguous, no overlap
            sizes = [stop - start for start, stop in slices]
            assert max(sizes) - min(sizes) <= 1


def test_output_rows_rejects_and_stats(synth, finished):
    out, summary = finished
    expected = {row["image_id"]: row for row in synth["rows"]}
    unlucky = {i for i in expected if int(i.rsplit("-", 1)[1]) % 4 == 0}
    empty = {i for i, row in expected.items() if not row["referents"]} - unlucky
    written = {}
    for path in glob.glob(os.path.join(out, "data", "train-*.parquet")):
        for row in pq.read_table(path).to_pylist():
            assert row["image_id"] not in written
            written[row["image_id"]] = row
    assert set(written) == set(expected) - unlucky - empty
    for image_id, row in written.items():
        truth = [r for r in expected[image_id]["referents"] if not (r["granularity"] == "part" and r["category"] == "window")]
        assert sorted(r["referent_id"] for r in row["referents"]) == sorted(r["referent_id"] for r in truth)
        by_id = {r["referent_id"]: r for r in row["referents"]}
        for ref in truth:
            assert by_id[ref["referent_id"]]["mask"] == ref["mask"]
            assert by_id[ref["referent_id"]]["sentences"] == ref["sentences"]
        assert row["image"]["bytes"] == open(os.path.join(synth["image_dir"], f"{image_id}.png"), "rb").read()

    rejects = [json.loads(line) for path in glob.glob(os.path.join(out, "rejects", "train-*.jsonl")) for line in open(path)]
    image_rejects = {r["item_id"]: r for r in rejects if r["level"] == "image"}
    assert set(image_rejects) == unlucky | empty
    assert all(image_rejects[i]["stage"] == "reject_some" and image_rejects[i]["reason"].startswith("unlucky image")
               for i in unlucky)
    windows = sum(1 for i in set(expected) - unlucky for r in expected[i]["referents"]
                  if r["granularity"] == "part" and r["category"] == "window")
    assert windows > 0
    assert sum(1 for r in rejects if r["level"] == "referent" and r["reason"] == "window part: not wanted") == windows

    stats = RunStats.from_dict(json.load(open(os.path.join(out, "stats.json"))))
    assert list(stats.stages) == ["load_images", "fill_from_ground_truth", "reject_some", "output"]
    assert stats.stages["output"].images_in == NUM_IMAGES - len(unlucky)
    assert stats.stages["output"].images_kept == len(written)
    reject_some = stats.stages["reject_some"]
    assert (reject_some.images_in, reject_some.images_kept) == (NUM_IMAGES, NUM_IMAGES - len(unlucky))
    assert reject_some.images_rejected == {"unlucky image": len(unlucky)}
    assert reject_some.referents_rejected == {"window part": windows}
    assert stats.images_written == len(written) and stats.images_in == NUM_IMAGES
    assert summary["exactly_once"]["written"] == len(written)
    assert summary["exactly_once"]["rejected"] == len(unlucky | empty)


def test_configs_card_and_streaming(synth, finished):
    out, _ = finished
    streamed = list(load_dataset(str(out), split="train", streaming=True))
    assert len(streamed) == sum(pq.read_metadata(p).num_rows for p in glob.glob(os.path.join(out, "data", "*.parquet")))
    assert streamed[0]["image"].size == (streamed[0]["width"], streamed[0]["height"])
    annotations = load_dataset(str(out), "annotations", split="train")
    assert "image" not in annotations.column_names
    assert sorted(annotations["image_id"]) == sorted(r["image_id"] for r in streamed)
    assert all(os.path.isfile(os.path.join(synth["image_dir"], name)) for name in annotations["file_name"])
    assert load_dataset(str(out), split="train").features == MRES_FEATURES
    card = open(os.path.join(out, "README.md")).read()
    objects = sum(1 for r in streamed for ref in r["referents"] if ref["granularity"] == "object")
    parts = sum(1 for r in streamed for ref in r["referents"] if ref["granularity"] == "part")
    assert f"| train | {len(streamed)} | {objects} | {parts} |" in card
    assert "| wheel |" in card and "## Categories" in card and "reject_some" in card
    assert "- `fill_from_ground_truth`: referents copied from the MRES-Synth ground truth" in card
    assert json.load(open(os.path.join(out, "run_options.json")))["runner"]["num_shards"] == 3
    for name in ("clip", "sam_iou", "sam_stability", "detector"):
        assert f"](figures/score_{name}.png)" in card
        assert open(os.path.join(out, "figures", f"score_{name}.png"), "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_rerun_skips_complete_shards_and_voids_unfinished_ones(synth, fake_env, tmp_path):
    out = tmp_path / "out"
    run_engine(_options(synth, out))
    before = {p: os.path.getmtime(p) for p in glob.glob(os.path.join(out, "data", "*.parquet"))}
    reference = check_exactly_once(str(out))
    # Shard 1 "was killed" after renaming its data but before its shard record: its record and
    # completion mark go; a temporary file and a stray extra part are left behind.
    os.remove(layout.shard_record_path(str(out), 1))
    os.remove(os.path.join(out, "logs", "completions", "00001"))
    stray_tmp = os.path.join(out, "data", ".tmp-train-00001-of-00003-001.parquet")
    stray_part = os.path.join(out, "data", "train-00001-of-00003-007.parquet")
    for path in (stray_tmp, stray_part):
        open(path, "wb").write(b"garbage")
    assert check_exactly_once(str(out))["complete_shards"] == 2
    run_engine(_options(synth, out))
    assert not os.path.exists(stray_tmp) and not os.path.exists(stray_part)
    after = {p: os.path.getmtime(p) for p in glob.glob(os.path.join(out, "data", "*.parquet"))}
    assert set(after) == set(before)
    redone = [p for p in before if before[p] != after[p]]
    assert redone and all("-00001-of-" in p for p in redone)  # only the void shard was written again
    again = check_exactly_once(str(out))
    assert (again["written"], again["rejected"], again["missing"], again["duplicated"]) == (
        reference["written"], reference["rejected"], [], [])


def test_another_shard_count_on_the_same_output_is_refused(synth, fake_env, tmp_path):
    run_engine(_options(synth, tmp_path / "out", num_shards=2))
    with pytest.raises(ValueError, match="--num_shards: 2 -> 3"):
        run_engine(_options(synth, tmp_path / "out", num_shards=3))


def test_large_shards_continue_in_bounded_part_files(synth, fake_env, tmp_path):
    out = tmp_path / "out"
    bound = 24_000
    run_engine(_options(synth, out, num_shards=1, max_shard_size=bound))
    data = sorted(glob.glob(os.path.join(out, "data", "*.parquet")))
    annotations = sorted(glob.glob(os.path.join(out, "annotations", "*.parquet")))
    assert len(data) > 2 and len(annotations) == len(data)
    assert all(os.path.getsize(p) <= bound for p in data), [os.path.getsize(p) for p in data]
    assert [pq.read_metadata(a).num_rows for a in annotations] == [pq.read_metadata(d).num_rows for d in data]
    assert not check_exactly_once(str(out))["duplicated"]


def test_a_step_that_loses_an_image_is_named(synth):
    class Forgetful:
        name = "forgetful"

        def __call__(self, records):
            return StageOutput(records=records[1:])

    class Rejecting:
        name = "rejecting"

        def __call__(self, records):
            return StageOutput(records=records[1:], rejects=[Reject(records[0].image_id, self.name, "bad: x")])

    records = [ImageRecord("a", "a.png", 8, 8), ImageRecord("b", "b.png", 8, 8)]
    kept, rejects = run_stages([Rejecting()], list(records), RunStats())
    assert [r.image_id for r in kept] == ["b"] and rejects[0].reason == "bad: x"
    with pytest.raises(RuntimeError, match="stage 'forgetful'.*lost images without a reject: \\['a'\\]"):
        run_stages([Forgetful()], list(records), RunStats())


def test_a_stage_returning_untyped_records_is_named():
    """A stage written for the dict records of earlier engines: one line naming it and the type to return."""
    class DictStage:
        name = "dict_stage"

        def __call__(self, records):
            return StageOutput(records=[{**dataclasses.asdict(r), "_image": None} for r in records])

    with pytest.raises(RuntimeError, match="stage 'dict_stage' broke the record contract: it returned a dict, not an ImageRecord"):
        run_stages([DictStage()], [ImageRecord("a", "a.png", 8, 8)], RunStats())


def test_process_shard_returns_the_existing_record_without_running(synth, fake_env, tmp_path):
    out = str(tmp_path / "out")
    run_engine(_options(synth, out, num_shards=2))

    class MustNotRun:
        name = "must_not_run"

        def __call__(self, records):
            raise AssertionError("a complete shard was processed again")

    record = process_shard(out, 0, 2, [MustNotRun()])
    assert record["rank"] == 0 and record["images_in"] == NUM_IMAGES // 2


def test_gpu_pinning_follows_the_local_rank(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert pin_process_to_gpu(1) == "5"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert pin_process_to_gpu(2) == "3"  # more workers than GPUs: round robin
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert pin_process_to_gpu(0) is None


def test_executors_run_one_task_per_shard(synth, tmp_path):
    local = build_executor(_options(synth, tmp_path / "a", num_shards=5, workers=2), [])
    assert isinstance(local, PinnedLocalPipelineExecutor) and (local.world_size, local.workers) == (5, 2)
    from datatrove.executor import SlurmPipelineExecutor

    slurm = build_executor(_options(synth, tmp_path / "b", num_shards=7, executor="slurm", slurm_partition="gpu",
                                    gpus_per_task=1, cpus_per_task=4), [])
    assert isinstance(slurm, SlurmPipelineExecutor)
    assert (slurm.world_size, slurm.gpus_per_task, slurm.cpus_per_task, slurm.partition) == (7, 1, 4, "gpu")
    finalizer = build_slurm_finalizer(_options(synth, tmp_path / "b", num_shards=7, executor="slurm",
                                               slurm_partition="gpu"), slurm)
    assert finalizer.world_size == 1 and finalizer.depends is slurm and finalizer.gpus_per_task == 0
    assert isinstance(finalizer.pipeline[0], FinalizeRun)
    with pytest.raises(ValueError, match="slurm_partition"):
        build_executor(_options(synth, tmp_path / "c", executor="slurm"), [])
    with pytest.raises(ValueError, match="--executor"):
        _options(synth, tmp_path / "d", executor="kubernetes")


def test_fake_factory_builds_load_images_first(synth, fake_env):
    # the factory the CLI tests name: LoadImages first, as the real build_stages does
    assert [s.name for s in build()] == ["load_images", "fill_from_ground_truth", "reject_some"]


def test_the_run_progress_bar_counts_complete_and_running_shards(synth, fake_env, tmp_path):
    out = str(tmp_path / "out")
    run_engine(_options(synth, out, num_shards=3))
    os.remove(layout.shard_record_path(out, 2))  # shard 2 is "running": 3 of its 4 images done
    write_progress(out, 2, 3)
    progress = RunProgress(out, 3, NUM_IMAGES, interval=0.01)
    assert progress.bar.n == 8  # a resumed run's bar starts at the complete shards
    with progress:
        pass
    assert progress.bar.n == 11
    assert progress.bar.format_dict["unit"] == "img"


def test_the_finalize_step_checks_and_writes_the_card(synth, fake_env, tmp_path):
    out = str(tmp_path / "out")
    run_engine(_options(synth, out, num_shards=2))
    for name in ("README.md", "stats.json"):
        os.remove(os.path.join(out, name))
    list(FinalizeRun(out).run())  # what the slurm finalize job runs
    assert os.path.exists(os.path.join(out, "README.md")) and os.path.exists(os.path.join(out, "stats.json"))
    os.remove(layout.shard_record_path(out, 0))
    with pytest.raises(RuntimeError, match="not complete"):
        list(FinalizeRun(out).run())


def test_a_datasets_detection_dataset_as_input(synth, fake_env, tmp_path):
    """--hub_dataset: a detection dataset (here a local Parquet folder, read as a Hub id would be) instead of JSON."""
    from datasets import ClassLabel, Dataset, Features, Image, List, Value

    categories = sorted({r["category"] for row in synth["rows"] for r in row["referents"] if r["granularity"] == "object"})
    features = Features({"image_id": Value("string"), "image": Image(),
                         "objects": {"bbox": List(List(Value("float32"), length=4)), "category": List(ClassLabel(names=categories))}})
    rows = [{"image_id": row["image_id"], "image": row["image"],
             "objects": {"bbox": [r["bbox"] for r in row["referents"] if r["granularity"] == "object"],
                         "category": [categories.index(r["category"]) for r in row["referents"] if r["granularity"] == "object"]}}
            for row in synth["rows"]]
    source = tmp_path / "hub"
    (source / "data").mkdir(parents=True)
    Dataset.from_list(rows, features=features).to_parquet(str(source / "data" / "train-00000-of-00001.parquet"))
    out = str(tmp_path / "out")
    summary = run_engine(_options(synth, out, annotations=None, image_dir=None, hub_dataset=str(source)))
    assert summary["exactly_once"]["images"] == NUM_IMAGES
    assert os.path.isfile(os.path.join(out, "input", "detections.json"))
    file_names = load_dataset(out, "annotations", split="train")["file_name"]
    assert file_names and all(name.endswith(".png") and not os.path.isabs(name) for name in file_names)
    reference = run_engine(_options(synth, str(tmp_path / "from_json")))
    assert summary["referents_written"] == reference["referents_written"]
    with pytest.raises(ValueError, match="not both"):
        run_engine(_options(synth, str(tmp_path / "both"), hub_dataset=str(source)))
