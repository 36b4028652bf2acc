"""`examples/build_dataset.py {own-data,instructpart,groundingsuite,reasonseg}` writes our schema as Parquet with a card
(source, licence, counts, the benchmark's conventions), and the published folder evaluates as the raw release does:
same annotations, and the benchmark's conventions found from the card."""

import importlib.util
from pathlib import Path

import pytest
from datasets import load_dataset

REPO = Path(__file__).resolve().parents[2]


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# the fixtures as released, written once for both commands' tests
fixtures = _load("benchmark_fixtures", Path(__file__).with_name("test_evaluate_benchmarks.py"))


def build_main():
    return _load("examples_build_benchmarks", REPO / "examples" / "build_dataset.py").main


@pytest.mark.parametrize("name, write, split, licence, source, counts", [
    ("own-data", fixtures.write_own_folder, "validation", "license: cc-by-4.0", "pretty_name: my_folder",
     "| validation | 1 | 1 | 1 | 3 |"),
    ("instructpart", fixtures.write_instructpart, "test", "license: mit", "github.com/zifuwan/InstructPart",
     "| test | 2 | 0 | 3 | 3 |"),
    ("groundingsuite", fixtures.write_groundingsuite, "test", "license: apache-2.0", "github.com/hustvl/GroundingSuite",
     "| test | 2 | 2 | 1 | 3 |"),
    ("reasonseg", fixtures.write_reasonseg, "val", "license: apache-2.0", "github.com/dvlab-research/LISA",
     "| val | 2 | 2 | 0 | 2 |"),
])
def test_built_with_its_card_and_evaluated_as_the_raw_release(tmp_path, name, write, split, licence, source, counts):
    root, _ = write(tmp_path / "my_folder")
    out = tmp_path / "built"
    extra = ["--license", "cc-by-4.0"] if name == "own-data" else []
    build_main()([name, "--data_dir", str(root), "--output_dir", str(out), "--cache_dir", str(tmp_path / "cache"), *extra])
    card = (out / "README.md").read_text(encoding="utf-8")
    assert licence in card and source in card and counts in card  # images, objects, parts, sentences
    assert (out / "rejects.jsonl").exists()
    assert len(list(load_dataset(str(out), split=split, streaming=True))) == int(counts.split("|")[2])

    raw, _ = fixtures._run(tmp_path, "--dataset", name.replace("-", "_"), "--data_dir", str(root), "--split", split)
    published, report = fixtures._run(tmp_path, "--dataset", str(out), "--split", split)
    raw_entry, published_entry = raw["splits"][split], published["splits"][split]
    assert published_entry["dataset"]["annotations_sha256"] == raw_entry["dataset"]["annotations_sha256"]
    assert published_entry["metrics"]["object+part"] == raw_entry["metrics"]["object+part"]
    if name == "own-data":
        assert published_entry["benchmark_conventions"] is None
    else:  # a published copy is recognised by its card's name
        assert published_entry["benchmark_conventions"]["key"] == raw_entry["benchmark_conventions"]["key"] == name
        assert "Benchmark conventions (" in report


def test_a_malformed_row_stops_the_build_in_one_line(tmp_path):
    root, _ = fixtures.write_groundingsuite(tmp_path / "gs", edit=lambda lines: lines[2].update(idx=0))
    with pytest.raises(SystemExit) as info:
        build_main()(["groundingsuite", "--data_dir", str(root), "--output_dir", str(tmp_path / "out"),
                      "--cache_dir", str(tmp_path / "cache")])
    assert info.value.code == f"error: {root / 'GroundingSuite-Eval.jsonl'}, line 3, key 'idx': idx 0 already used on line 1"
    assert not (tmp_path / "out" / "README.md").exists()


def test_configs_are_the_builders(tmp_path, capsys):
    root, _ = fixtures.write_instructpart(tmp_path / "ip")
    out = tmp_path / "plain"
    build_main()(["instructpart", "--data_dir", str(root), "--config", "part_of_object", "--output_dir", str(out),
                  "--cache_dir", str(tmp_path / "cache")])
    rows = list(load_dataset(str(out), split="test"))
    assert rows[1]["referents"][0]["sentences"] == ["handle of the coffee mug"]
    assert "pretty_name: InstructPart (MRES schema, part_of_object)" in (out / "README.md").read_text()
    with pytest.raises(SystemExit) as info:
        build_main()(["own-data", "--data_dir", str(root), "--config", "task", "--output_dir", str(tmp_path / "x")])
    assert info.value.code == 2 and "--config task: own-data has no configs" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_main()(["reasonseg", "--data_dir", str(root), "--config", "task", "--output_dir", str(tmp_path / "x")])
    assert "reasonseg has the configs default, all_texts, short, long" in capsys.readouterr().err
