"""Ray and Slurm for real: a local cluster of each on 127.0.0.1 runs the engine with tiny models, and its rows
equal the local executor's; a task that no node can hold is refused before submitting, naming the option.

Without Ray or Slurm installed (or not root, for slurmd) the two cluster tests skip, naming why; under
CI=true they fail instead (``make test`` installs both). The resource check itself is tested without a cluster.
"""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mres_engine.errors import EngineUsageError
from mres_engine.executors import check_cluster_resources, check_task_fits, parse_gres_gpus
from mres_engine.options import RunnerOptions
from mres_engine.run import run_engine
from tiny_models.engine import FakeChatServer, save_tiny_stage_models, tiny_chat_answer, write_synth_detection_set
from local_clusters import LocalRay, LocalSlurm, ray_executable, require, slurm_missing

REPO = Path(__file__).resolve().parents[2]
GIB = 1024**3


# -- the check, without a cluster --------------------------------------------------------------------------------

def _options(**overrides):
    return RunnerOptions(**{"output_dir": "unused", "executor": "ray", **overrides})


def test_a_task_larger_than_every_node_names_the_option_to_change():
    nodes = [{"name": "n1", "cpus": 2, "gpus": 0, "memory": 16 * GIB}, {"name": "n2", "cpus": 16, "gpus": 0, "memory": 64 * GIB}]
    check_task_fits(nodes, _options(cpus_per_task=8, gpus_per_task=0, mem_per_cpu_gb=4), "the test cluster")  # n2 holds it
    with pytest.raises(EngineUsageError, match=r"^--gpus_per_task: one task asks 8 CPUs .* 1 GPUs .*use --gpus_per_task 0 or less$"):
        check_task_fits(nodes, _options(cpus_per_task=8, gpus_per_task=1, mem_per_cpu_gb=4), "the test cluster")
    with pytest.raises(EngineUsageError, match=r"--cpus_per_task 16 or less and --gpus_per_task 0 or less"):
        check_task_fits(nodes, _options(cpus_per_task=32, gpus_per_task=1, mem_per_cpu_gb=1), "the test cluster")
    with pytest.raises(EngineUsageError, match=r"^--mem_per_cpu_gb: .*--mem_per_cpu_gb 8.00 or less"):
        check_task_fits(nodes, _options(cpus_per_task=8, gpus_per_task=0, mem_per_cpu_gb=16), "the test cluster")
    # each need fits some node, but no single node holds them all
    mixed = [{"name": "cpu", "cpus": 64, "gpus": 0, "memory": 256 * GIB}, {"name": "gpu", "cpus": 4, "gpus": 8, "memory": 256 * GIB}]
    with pytest.raises(EngineUsageError, match="no one node holds all of them"):
        check_task_fits(mixed, _options(cpus_per_task=8, gpus_per_task=1, mem_per_cpu_gb=1), "the test cluster")


def test_slurm_gres_fields():
    assert [parse_gres_gpus(g) for g in ("gpu:4", "gpu:a100:4(S:0-1)", "gpu:a100:2,gpu:v100:2", "(null)", "", "mps:100")] == [4, 4, 4, 0, 0, 0]


def test_the_check_can_be_turned_off_and_local_runs_are_not_checked():
    check_cluster_resources(_options(executor="local", cpus_per_task=10_000))
    check_cluster_resources(_options(executor="ray", cpus_per_task=10_000, check_resources=False))


# -- the clusters ------------------------------------------------------------------------------------------------

def _arguments(stage_options) -> list[str]:
    argv = []
    for option in dataclasses.fields(stage_options):
        value = getattr(stage_options, option.name)
        if value is not None:
            argv += [f"--{option.name}", str(value)]
    return argv


def rows_of(out) -> dict:
    """The rows of an output, without image bytes, by image id (scores rounded: thread counts differ by executor)."""
    rows = {}
    for path in sorted(Path(out, "annotations").glob("*.parquet")):
        for row in pq.read_table(path).to_pylist():
            for ref in row["referents"]:
                ref["scores"] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in ref["scores"].items()}
            rows[row["image_id"]] = row
    return rows


@pytest.fixture(scope="module")
def engine_setup(tmp_path_factory):
    """Tiny models and a chat server for the part LLM and captioner, and the local executor's output as the reference."""
    root = tmp_path_factory.mktemp("clusters")
    annotations, image_dir, _ = write_synth_detection_set(root / "set", num_images=4, split="train")
    with FakeChatServer(tiny_chat_answer) as server:
        stage_options = save_tiny_stage_models(root / "models", server.url)
        reference = root / "local"
        run_engine(RunnerOptions(annotations=annotations, image_dir=image_dir, output_dir=str(reference), num_shards=2, workers=1,
                                 source="mres-synth", progress=False), stage_options)
        yield {"root": root, "annotations": annotations, "image_dir": image_dir, "stage_options": stage_options,
               "reference": rows_of(reference)}


def _engine_command(setup, out, *extra) -> list[str]:
    return [sys.executable, "-m", "mres_engine", "run", "--annotations", setup["annotations"], "--image_dir", setup["image_dir"],
            "--output_dir", str(out), "--num_shards", "2", "--source", "mres-synth", "--progress", "False",
            *_arguments(setup["stage_options"]), *extra]


def _environment() -> dict:
    return {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}


def test_ray_cluster_runs_the_engine_like_the_local_executor(engine_setup, tmp_path):
    try:
        import ray  # noqa: F401
    except ImportError:
        ray = None
    require(ray is not None and ray_executable() is not None, "ray is not installed (the dev extra installs it)")
    env = _environment()
    with LocalRay(num_cpus=2, env=env) as cluster:
        too_big = subprocess.run(_engine_command(engine_setup, tmp_path / "too_big", "--executor", "ray", "--ray_address", cluster.address,
                                                 "--cpus_per_task", "8", "--gpus_per_task", "0", "--mem_per_cpu_gb", "0.25"),
                                 cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert too_big.returncode == 2, too_big.stderr[-2000:]
        last = too_big.stderr.strip().splitlines()[-1]
        assert last.startswith("python -m mres_engine run: error: --cpus_per_task: one task asks 8 CPUs") and "--cpus_per_task 2 or less" in last
        assert not (tmp_path / "too_big" / "manifest" / "manifest.json").exists()  # refused before reading the input

        out = tmp_path / "ray"
        result = subprocess.run(_engine_command(engine_setup, out, "--executor", "ray", "--ray_address", cluster.address,
                                                "--cpus_per_task", "1", "--gpus_per_task", "0", "--mem_per_cpu_gb", "0.5"),
                                cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = rows_of(out)
    assert rows and rows == engine_setup["reference"]
    assert (out / "stats.json").exists() and "(unfinished)" not in (out / "README.md").read_text()


def test_slurm_cluster_runs_the_engine_like_the_local_executor(engine_setup, tmp_path):
    require(slurm_missing() is None, slurm_missing() or "")
    with LocalSlurm(memory_mb=4000) as cluster:
        env = {**_environment(), **{k: cluster.env[k] for k in ("SLURM_CONF", "PATH")},
               "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        slurm = ["--executor", "slurm", "--slurm_partition", cluster.partition, "--gpus_per_task", "0", "--slurm_time", "0:10:00"]
        too_big = subprocess.run(_engine_command(engine_setup, tmp_path / "too_big", *slurm, "--cpus_per_task", "64"),
                                 cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert too_big.returncode == 2, too_big.stderr[-2000:]
        assert "error: --cpus_per_task: one task asks 64 CPUs" in too_big.stderr.strip().splitlines()[-1]
        assert subprocess.run(["squeue", "--noheader"], env=env, capture_output=True, text=True).stdout.strip() == ""

        out = tmp_path / "slurm"
        submitted = subprocess.run(_engine_command(engine_setup, out, *slurm, "--cpus_per_task", "1", "--mem_per_cpu_gb", "1"),
                                   cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert submitted.returncode == 0, submitted.stderr[-3000:]
        finished = cluster.wait_idle(timeout=240)  # the shard array, datatrove's stats merge, then the finaliser job
        logs = "".join(p.read_text(errors="replace")[-1500:] for p in sorted(out.glob("logs/**/slurm_logs/*.out")))
        assert finished, f"jobs still queued after 240 s\n{logs}\n{cluster.logs()}"
    assert (out / "stats.json").exists() and "(unfinished)" not in (out / "README.md").read_text(), logs  # the finaliser job's
    rows = rows_of(out)
    assert rows and rows == engine_setup["reference"]
