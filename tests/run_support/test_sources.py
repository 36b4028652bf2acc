"""A mistyped local path is reported as a missing path, not as a network problem."""

import pytest

from run_support import sources
from run_support.sources import check_local_or_hub, looks_like_local_path


@pytest.mark.parametrize("name, local", [
    ("/data/model", True), ("./model", True), ("../m", True), ("~/m", True), ("C:\\models\\m", True),
    ("a/b/c", True),  # three parts: never a repo id
    ("model.safetensors", True),
    ("org/unires", False), ("unires-base", False), ("openai/clip-vit-base-patch16", False),
])
def test_names_that_can_only_be_paths(name, local):
    assert looks_like_local_path(name) is local


def test_a_missing_folder_under_an_existing_parent_is_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    with pytest.raises(FileNotFoundError, match=r"No model folder or file at outputs/modle .*run `make demo`"):
        check_local_or_hub("outputs/modle", hint="run `make demo` first.")
    (tmp_path / "outputs" / "model").mkdir()
    assert check_local_or_hub("outputs/model") == "outputs/model"


def test_a_hub_id_offline_names_both_readings(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sources.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError, match=r"org/unires is not a local dataset folder, and the Hub is offline"):
        check_local_or_hub("org/unires", kind="dataset")
    monkeypatch.setattr(sources.constants, "HF_HUB_OFFLINE", False)
    assert check_local_or_hub("org/unires") == "org/unires"


def test_load_mres_dataset_names_a_mistyped_folder(tmp_path, monkeypatch):
    from dataset_scripts.load import load_mres_dataset

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    with pytest.raises(FileNotFoundError, match="No dataset folder or file at data/mres-sytnh"):
        load_mres_dataset(["data/mres-sytnh"], "train")


def test_a_hub_id_in_the_local_cache_is_accepted_offline(monkeypatch, tmp_path):
    # from_pretrained reads a cached repo offline; refusing it made `HF_HUB_OFFLINE=1 predict.py --model org/unires`
    # fail although the model was there.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sources.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(sources.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    (tmp_path / "hub" / "models--org--unires").mkdir(parents=True)
    assert check_local_or_hub("org/unires") == "org/unires"
    with pytest.raises(OSError, match="the Hub is offline"):  # a model in the cache is not a dataset
        check_local_or_hub("org/unires", kind="dataset")
    (tmp_path / "hub" / "datasets--org--unires").mkdir(parents=True)
    assert check_local_or_hub("org/unires", kind="dataset") == "org/unires"
