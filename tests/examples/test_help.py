"""`--help` of the example scripts (issue 20, case 8): fast (torch, transformers and the other heavy libraries are
imported only after the command line is parsed), every option with its help, defaults shown."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = ["predict.py", "app.py", "demo.py", "ablate.py", "caption_boxes.py", "evaluate_model.py", "export.py"]
HEAVY = ("torch", "transformers", "datasets", "accelerate", "gradio", "peft", "numpy")

CHILD = r"""
import argparse, json, runpy, sys
script, report, heavy = sys.argv[1], sys.argv[2], set(sys.argv[3:])  # read before sys.argv is replaced below
parsers = []
real_parse_known_args = argparse.ArgumentParser.parse_known_args

def spy(self, *args, **kwargs):
    parsers.append(self)
    return real_parse_known_args(self, *args, **kwargs)

argparse.ArgumentParser.parse_known_args = spy
sys.argv = [script, "--help"]
try:
    runpy.run_path(script, run_name="__main__")
except SystemExit as exit:
    code = exit.code
else:
    code = "no exit"
from run_support.cli import HelpFormatter
parser = parsers[0]
options = [
    {"option": "/".join(action.option_strings) or action.dest, "help": action.help}
    for action in parser._actions if not isinstance(action, argparse._HelpAction)
]
with open(report, "w") as handle:
    json.dump({
        "code": code,
        "heavy": sorted({name.split(".")[0] for name in sys.modules} & heavy),
        "shows_defaults": issubclass(parser.formatter_class, HelpFormatter),
        "options": options,
    }, handle)
"""


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_is_fast_and_complete(script, tmp_path):
    report = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(REPO / "examples" / script), str(report), *HEAVY],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    child = json.loads(report.read_text())
    assert child["code"] == 0, child
    assert child["heavy"] == [], f"{script} --help imports {child['heavy']}"
    assert child["shows_defaults"], f"{script}: use run_support.cli.HelpFormatter"
    missing = [option["option"] for option in child["options"] if not (option["help"] or "").strip()]
    assert not missing, f"{script}: options without help: {missing}"
    assert "(default:" in result.stdout and "usage:" in result.stdout
    description = result.stdout.split("options:")[0]
    # A backslash continuation in the docstring stays a line break (a raw docstring), not "x.jpg      --box".
    assert not re.search(r"\S {4,}--", description), description


TRAINING_CHILD = r"""
import runpy, sys
script = sys.argv[1]
sys.argv = [script, "--help"]
try:
    runpy.run_path(script, run_name="__main__")
except SystemExit as exit:
    assert exit.code in (0, None), exit.code
loaded = sorted({name.split(".")[0] for name in sys.modules} & {"torch", "accelerate", "datasets", "peft", "gradio"})
print("LOADED", loaded, file=sys.stderr)
"""


@pytest.mark.parametrize("script", ["train.py", "train_captioner.py"])
def test_training_help_reads_the_arguments_without_loading_torch(script):
    # HfArgumentParser (transformers' own, as Trainer scripts use) shows every default; the training loop, torch and
    # accelerate load only once the command line is read.
    result = subprocess.run([sys.executable, "-c", TRAINING_CHILD, str(REPO / "examples" / script)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "LOADED []" in result.stderr, result.stderr[-500:]
    assert "--push_to_hub" in result.stdout and "--hub_model_id" in result.stdout and "(default:" in result.stdout
