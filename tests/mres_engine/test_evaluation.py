"""`evaluate`: an engine output against ground truth (MRES-Synth) -- perfect on the truth, lower when perturbed."""

import json

import pytest
from datasets import Dataset, DatasetDict

from dataset_scripts.features import MRES_FEATURES
from dataset_scripts.publish import publish
from mres_engine.__main__ import main
from mres_engine.evaluation import evaluate_engine_output
from mres_engine.options import RunnerOptions
from mres_engine.run import run_engine
from tiny_models.engine import write_synth_detection_set
from test_runner_fakes import GROUND_TRUTH_ENV, PERTURB_ENV, REJECT_EVERY_ENV, scrambled_copy, write_ground_truth


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    annotations, image_dir, rows = write_synth_detection_set(root / "set", num_images=8, split="train")
    rows = [row for row in rows if row["referents"]]  # as the MRES-Synth builder writes them
    truth = publish(DatasetDict({"train": Dataset.from_list(rows, features=MRES_FEATURES)}), str(root / "truth"))
    scrambled = publish(DatasetDict({"train": Dataset.from_list(scrambled_copy(rows), features=MRES_FEATURES)}),
                        str(root / "scrambled"))
    outputs = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(GROUND_TRUTH_ENV, write_ground_truth(rows, root / "ground_truth.json"))
        mp.setenv(REJECT_EVERY_ENV, "0")
        for name, perturb in (("exact", "0"), ("perturbed", "1")):
            mp.setenv(PERTURB_ENV, perturb)
            outputs[name] = str(root / name)
            run_engine(RunnerOptions(annotations=annotations, image_dir=image_dir, output_dir=outputs[name],
                                     num_shards=2, workers=1, source="mres-synth", progress=False,
                                     stages_factory="test_runner_fakes:build"))
    return {"truth": truth, "scrambled": scrambled, "rows": rows, **outputs}


def _scores(report):
    return {g: (v["matched_iou"], v["recall"], v["precision"]) for g, v in report["granularities"].items()}


def test_ground_truth_against_itself_is_perfect(setup):
    report = evaluate_engine_output(setup["truth"], setup["truth"])
    assert _scores(report) == {"object": (1.0, 1.0, 1.0), "part": (1.0, 1.0, 1.0)}
    assert report["images"] == len(setup["rows"]) and report["images_missing_from_prediction"] == 0
    assert report["keep_rate"] == {}  # not an engine output


def test_engine_output_of_the_truth_is_perfect_and_reports_keep_rates(setup):
    report = evaluate_engine_output(setup["exact"], setup["truth"])
    assert _scores(report) == {"object": (1.0, 1.0, 1.0), "part": (1.0, 1.0, 1.0)}
    assert report["part_recall"] == 1.0
    assert report["keep_rate"]["load_images"] == {"images": 1.0, "referents": None}
    assert report["keep_rate"]["fill_from_ground_truth"]["images"] == 1.0


def test_perturbed_and_scrambled_masks_score_lower(setup):
    perturbed = evaluate_engine_output(setup["perturbed"], setup["truth"])
    scrambled = evaluate_engine_output(setup["scrambled"], setup["truth"])
    for granularity in ("object", "part"):
        eroded_iou = perturbed["granularities"][granularity]["matched_iou"]
        random_iou = scrambled["granularities"][granularity]["matched_iou"]
        assert random_iou < eroded_iou < 1.0, granularity
    # one-pixel erosion wipes out thin parts far more than objects
    assert perturbed["granularities"]["part"]["matched_iou"] < perturbed["granularities"]["object"]["matched_iou"]


def test_missing_images_count_as_empty_predictions(setup, tmp_path):
    rows = setup["rows"][1:]  # the first image was "rejected"
    partial = publish(DatasetDict({"train": Dataset.from_list(rows, features=MRES_FEATURES)}), str(tmp_path / "p"))
    report = evaluate_engine_output(partial, setup["truth"])
    assert report["images_missing_from_prediction"] == 1
    first = setup["rows"][0]["referents"]
    objects = sum(r["granularity"] == "object" for row in setup["rows"] for r in row["referents"])
    expected = 1 - sum(r["granularity"] == "object" for r in first) / objects
    assert report["granularities"]["object"]["recall"] == pytest.approx(expected)
    assert report["granularities"]["object"]["precision"] == 1.0


def test_command_line_writes_the_report(setup, tmp_path, capsys):
    path = tmp_path / "report.json"
    main(["evaluate", "--prediction", setup["perturbed"], "--ground_truth", setup["truth"],
          "--output_json", str(path)])
    report = json.load(open(path))
    assert report["granularities"]["part"]["matched_iou"] < 1.0
    assert "matched IoU" in capsys.readouterr().out
