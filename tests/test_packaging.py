"""The package as users install it: the wheel builds without warnings, holds the six packages and their data
files and nothing else, and, installed into a fresh virtual environment, runs the pipeline and the `evaluate`
module from a folder outside the repository, importing nothing from the checkout; the model, the datasets,
training and evaluation import none of the `engine` and `app` extras' packages.

The fresh environment reuses the installed dependencies through a `.pth` file (no download); a path line in a
`.pth` file does not run the `.pth` files of the folder it names, so this checkout's editable finder stays out.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement


if sys.version_info >= (3, 11):
    import tomllib
else:  # the dev extra installs tomli there
    import tomli as tomllib


REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("modeling_unires", "unires", "dataset_scripts", "captioner", "mres_engine", "run_support")
NOT_SHIPPED = ("__pycache__", ".pytest_cache", "*.egg-info", "build", "dist", ".venv", ".git", "outputs")
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
# Import names of the engine and app extras' packages (datatrove, segment_anything, torchvision, peft, gradio).
EXTRAS_IMPORTS = [
    Requirement(spec).name.replace("-", "_") for extra in ("engine", "app") for spec in PROJECT["optional-dependencies"][extra]
]


def _source_files():
    """The checkout's files as git sees them (tracked, plus untracked ones that are not ignored)."""
    if (REPO / ".git").exists() and shutil.which("git"):
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=REPO, check=True, capture_output=True, text=True,
        ).stdout
        return [name for name in listed.split("\0") if name and (REPO / name).is_file()]
    ignore = shutil.ignore_patterns(*NOT_SHIPPED)
    return [
        str(path.relative_to(REPO)) for path in REPO.rglob("*")
        if path.is_file() and not any(ignore("", [part]) for part in path.relative_to(REPO).parts)
    ]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Build sdist and wheel (the wheel from the sdist, as `python -m build` does) from a copy of the checkout."""
    root = tmp_path_factory.mktemp("packaging")
    source = root / "source"
    files = _source_files()
    for name in files:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")}
    # No isolation: the build reuses this environment's setuptools (the dev extra) instead of downloading one.
    result = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(root / "dist"), str(source)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log
    (wheel,) = (root / "dist").glob("*.whl")
    return root, wheel, files, log


def test_build_prints_no_warning(built):
    _, _, _, log = built
    warnings = [line for line in log.splitlines() if re.search(r"warning|deprecat", line, re.IGNORECASE)]
    assert not warnings, "the build warns:\n" + "\n".join(warnings)


def test_wheel_holds_the_six_packages_their_data_files_and_nothing_else(built):
    _, wheel, source_files, _ = built
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        dist_info = f"unires-{PROJECT['version']}.dist-info"
        metadata = archive.read(f"{dist_info}/METADATA").decode()
    assert {name.split("/")[0] for name in names} == {*PACKAGES, dist_info}
    # Every file of each package, Python or data, and nothing else of the checkout (tests/, examples/, benchmarks/).
    shipped = {name for name in names if not name.startswith(dist_info)}
    expected = {name for name in source_files if name.split("/")[0] in PACKAGES}
    assert shipped == expected, f"missing {sorted(expected - shipped)}; extra {sorted(shipped - expected)}"
    for data_file in ("unires/evaluation/mres_iou/mres_iou.py", "unires/evaluation/mres_iou/README.md"):
        assert data_file in shipped
    assert f"{dist_info}/licenses/LICENSE" in names
    # Tiny-model builders live with the tests (tests/tiny_models): none ships, and no shipped module imports one.
    assert not [name for name in shipped if name.endswith("testing_utils.py")]
    with zipfile.ZipFile(wheel) as archive:
        importing_tests = [name for name in shipped if name.endswith(".py") and re.search(
            rb"^\s*(from|import)\s+(tiny_models|tests)\b", archive.read(name), re.MULTILINE)]
    assert not importing_tests, f"shipped modules import test builders: {importing_tests}"

    assert "License-Expression: Apache-2.0" in metadata
    requirements = [Requirement(line.split(":", 1)[1]) for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    capped = [str(r) for r in requirements if any(spec.operator not in (">=", "!=") for spec in r.specifier)]
    assert not capped, f"requirements must carry lower bounds only: {capped}"
    extras = {line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Provides-Extra:")}
    assert {"app", "engine", "dev"} <= extras


def test_citation_cites_the_paper_and_this_version():
    citation = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert citation["version"] == PROJECT["version"] and citation["license"] == PROJECT["license"]
    paper = citation["preferred-citation"]
    assert paper["title"].startswith("Unveiling Parts Beyond Objects") and paper["year"] == 2024
    assert [author["family-names"] for author in paper["authors"]] == ["Wang", "Yue", "Zhang", "Guo", "He", "Wang", "Liu"]
    assert any("2312.08007" in identifier["value"] for identifier in paper["identifiers"])


RUN_OUTSIDE = textwrap.dedent(
    """
    import json, sys
    folder, extras = sys.argv[1], json.loads(sys.argv[2])
    # The core install: the model, the datasets, training and evaluation import none of the extras' packages.
    for name in extras:
        sys.modules[name] = None
    import evaluate
    import numpy as np
    from transformers import pipeline

    import dataset_scripts, dataset_scripts.load, dataset_scripts.mres_synth, dataset_scripts.publish
    import modeling_unires, unires, unires.training
    from unires.evaluation import MRES_IOU_METRIC_PATH

    # `folder` holds a tiny checkpoint the test saved with the checkout's builders (tests/tiny_models, not shipped)
    segmenter = pipeline("referring-expression-segmentation", model=folder)
    image = np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    results = segmenter(image, ["the red car", "the left wheel of the bus"], mask_format="numpy")

    top, left, top_left = (np.zeros((4, 4), bool) for _ in range(3))
    top[:2], left[:, :2], top_left[:2, :2] = True, True, True
    metric = evaluate.load(MRES_IOU_METRIC_PATH, keep_in_memory=True)
    scores = metric.compute(predictions=[top, left], references=[top, top_left], granularities=["object", "part"])

    for name in extras:
        del sys.modules[name]
    import captioner, mres_engine, mres_engine.run  # the engine extra's

    ours = ("modeling_unires", "unires", "dataset_scripts", "captioner", "mres_engine", "run_support")
    print(json.dumps({
        "masks": [[result["text"], list(result["mask"].shape)] for result in results],
        "mIoU": {group: scores[group]["mIoU"] for group in ("object", "part", "object+part")},
        "oIoU": scores["object+part"]["oIoU"],
        "versions": {name: sys.modules[name].__version__ for name in ours},
        "files": {name: module.__file__ for name, module in sys.modules.items()
                  if name.split(".")[0] in ours and getattr(module, "__file__", None)},
    }))
    """
)


def test_installed_wheel_runs_outside_the_checkout(built):
    root, wheel, _, _ = built
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    # This environment's pip installs into the fresh one; nothing of ours is on its path yet, so nothing to replace.
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
        check=True, timeout=300,
    )
    fresh_site = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip())
    # The dependencies: this environment's site-packages, after the fresh one's (which holds our packages).
    reused = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (fresh_site / "reuse_installed_dependencies.pth").write_text("".join(f"{path}\n" for path in reused))

    from tiny_models.unires import tiny_model_and_processor

    model, processor = tiny_model_and_processor(seed=0)
    model.save_pretrained(root / "tiny-model")
    processor.save_pretrained(root / "tiny-model")
    outside = root / "outside"
    outside.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(PYTHONNOUSERSITE="1", HF_HOME=str(root / "hf"), HF_MODULES_CACHE=str(root / "hf" / "modules"))
    result = subprocess.run(
        [str(python), "-c", RUN_OUTSIDE, str(root / "tiny-model"), json.dumps(EXTRAS_IMPORTS)],
        cwd=outside, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])

    assert report["masks"] == [["the red car", [24, 40]], ["the left wheel of the bus", [24, 40]]]
    # Object: IoU 1; part: left half against the top-left quarter, IoU 4/8; overall 12 of 16 pixels.
    assert report["mIoU"] == pytest.approx({"object": 100.0, "part": 50.0, "object+part": 75.0})
    assert report["oIoU"] == pytest.approx(75.0)
    assert report["versions"] == dict.fromkeys(PACKAGES, PROJECT["version"])
    # Every module of ours came from the fresh environment, the metric's computation included.
    assert set(PACKAGES) | {"unires.evaluation.metrics"} <= set(report["files"])
    for name, file in report["files"].items():
        assert Path(file).resolve().is_relative_to(fresh_site.resolve()), f"{name} imported from {file}"
