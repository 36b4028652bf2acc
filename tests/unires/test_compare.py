"""`--compare` shows every difference it exists to show (issue 28, case 3): one row per result, distinct labels for
results of one name, a note for every difference in data, conventions and adapter; a bad file is one line
(case 8); a `--max_images` report states "N of M" (case 8)."""

import copy
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from dataset_scripts.mres_synth import build_mres_synth
from unires.evaluation import CallableSegmenter, run_evaluation
from unires.evaluation.harness import compare_table, markdown_report

REPO = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("examples_evaluate_compare",
                                                  REPO / "examples" / "evaluate_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _half(image, texts):
    """Probability 0.4 on the top half, 0 below: foreground at threshold 0.35, background at 0.5."""
    probabilities = np.zeros((image.height, image.width), np.float32)
    probabilities[: image.height // 2] = 0.4
    return [probabilities for _ in texts]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare") / "synth"
    build_mres_synth(folder, image_size=40, seed=3, num_images={"train": 1, "validation": 3, "test": 0,
                                                                "test_unseen": 0})
    return folder


def _result(synth, threshold=None, input_size=None, **options):
    return run_evaluation(None, "callable", str(synth), ["validation"], label="ckpt", progress=False,
                          segmenter=CallableSegmenter(_half, threshold=threshold, input_size=input_size), **options)


def _model_rows(table: str, split="validation", group="object+part") -> list[str]:
    return [line for line in table.splitlines() if line.endswith(" |") and f" | {split} | {group} |" in line]


def test_one_checkpoint_under_two_protocols_is_two_labelled_rows_and_notes_what_differs(synth):
    default = _result(synth)
    strict = _result(synth, threshold=0.5, prec_comparison=">")
    table = compare_table([default, strict])
    rows = _model_rows(table)
    assert [row.split(" | ")[0] for row in rows] == ["| ckpt", "| ckpt (2)"]
    assert rows[0] != rows[1].replace("ckpt (2)", "ckpt")  # the numbers differ, and each keeps its own row
    notes = table.split("\n\n", 1)[1]
    assert "thresholds differ (each segmenter's stated one): ckpt: 0.35; ckpt (2): 0.5" in notes
    assert "validation: conventions: prec_comparison differs: ckpt: Prec@X counts IoU >= X; ckpt (2): Prec@X counts IoU > X" \
        in notes
    assert "evaluated on different data" not in notes  # the same rows, however stored

    # A third run of the same name: "ckpt (3)"; the same protocol twice gives two rows and no note.
    assert [row.split(" | ")[0] for row in _model_rows(compare_table([default, strict, default]))] == \
           ["| ckpt", "| ckpt (2)", "| ckpt (3)"]
    same = compare_table([default, copy.deepcopy(default)])
    assert len(_model_rows(same)) == 2 and "\n- " not in same


def test_resolution_and_data_subset_are_noted(synth):
    full = _result(synth)
    subset = _result(synth, max_images=1, resolution="input", input_size=20)
    notes = compare_table([full, subset]).split("\n\n", 1)[1]
    assert "**validation: the rows were evaluated on different data**" in notes
    assert "validation: data: max_images differs: ckpt: None; ckpt (2): 1" in notes
    assert "validation: data: annotations_sha256 differs" in notes and "validation: data: counts differs" in notes
    assert "validation: conventions: resolution differs: ckpt: original image size; ckpt (2): model input size 20x20" \
        in notes


def test_adapter_choices_are_noted_even_under_distinct_names(synth):
    base = _result(synth)
    sam3 = copy.deepcopy(base)
    sam3["model"].update(name="sam3-best", type="sam3")
    sam3["model"]["segmenter"].update(model_type="sam3", instance_rule="best", resizing="bilinear")
    union = copy.deepcopy(sam3)
    union["model"]["name"] = "sam3-union"
    union["model"]["segmenter"].update(instance_rule="union", score_threshold=0.5)
    notes = compare_table([base, sam3, union]).split("\n\n", 1)[1]
    assert "adapter: model_type differs: ckpt: callable; sam3-best: sam3; sam3-union: sam3" in notes
    assert "adapter: instance_rule differs: ckpt: None; sam3-best: best; sam3-union: union" in notes
    assert "adapter: score_threshold differs: ckpt: None; sam3-best: None; sam3-union: 0.5" in notes
    assert "adapter: resizing differs" in notes


def test_a_max_images_report_states_n_of_m(synth):
    report = markdown_report(_result(synth, max_images=2))
    assert "2 of 3 images (--max_images 2)" in report
    assert "; 3 images," in markdown_report(_result(synth))


def test_compare_files_that_are_missing_or_not_results_are_one_line(synth, tmp_path, capsys):
    script = _script()
    missing = tmp_path / "results" / "nope.json"
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--compare", str(missing)])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and f"--compare: No result file at {missing}." in error
    assert "Traceback" not in error and len(error.strip().splitlines()) == 2  # one usage line, one error line

    garbled = tmp_path / "garbled.json"
    garbled.write_text("{not json")
    with pytest.raises(SystemExit, match=f"error: --compare: {garbled} is not a readable result file"):
        script.main(["--compare", str(garbled)])
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "something-else/1"}))
    with pytest.raises(SystemExit, match=f"error: --compare: {other}: not a result of this harness"):
        script.main(["--compare", str(other)])

    # Two results of one name through the command line: both rows, labelled apart.
    for name, threshold in (("a.json", "0.35"), ("b.json", "0.5")):
        result = _result(synth, threshold=float(threshold))
        (tmp_path / name).write_text(json.dumps(result))
    capsys.readouterr()
    script.main(["--compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    out = capsys.readouterr().out
    assert "| ckpt | validation | object+part |" in out and "| ckpt (2) | validation | object+part |" in out
