"""``--executor slurm`` through submitit's local executor: the same files as the local path.

``$LMGRADE_SUBMITIT_CLUSTER=local`` makes ``--executor slurm`` submit to submitit's local
executor, so this drives the Slurm code path (array, merge, retry) on one machine. Small: 4 toy
submissions (3 distinct stagings) in 2 shards; 3 checkpoints in 2 shards.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("submitit")

from grader.batch import DETAILED_CSV, GRADESCOPE_CSV, STATE_FILE
from grader.cluster import ClusterError, ClusterOptions, run_array


def _export(toy, root: Path) -> Path:
    for name, kind in (
        ("ann", "reference"),
        ("ben", "reference"),
        ("cat", "template"),
        ("dan", "syntax"),
    ):
        folder = root / name
        folder.mkdir(parents=True)
        if kind == "reference":
            for f in ("ops.py", "helper.py"):
                shutil.copyfile(toy.reference_dir / f, folder / f)
        elif kind == "template":
            shutil.copytree(toy.template_dir, folder, dirs_exist_ok=True)
        else:
            (folder / "ops.py").write_text("def scaled(x, s)\n    return x * s\n")
    return root


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_batch_on_slurm_through_submitit_local_writes_the_local_paths_files(
    toy, toy_root, shared_tmp, monkeypatch, capsys
):
    from grader.cli import main

    monkeypatch.setenv("LMGRADE_HOME", str(toy_root))
    monkeypatch.setenv("LMGRADE_SUBMITIT_CLUSTER", "local")
    base = shared_tmp / "cluster"
    export = _export(toy, base / "export")
    assert main(["batch", "toy", str(export), "-o", str(base / "local"), "--jobs", "1"]) == 0
    out = base / "slurm"
    assert (
        main(
            [
                "batch",
                "toy",
                str(export),
                "-o",
                str(out),
                "--jobs",
                "1",
                "--executor",
                "slurm",
                "--shards",
                "2",
                "--timeout-min",
                "10",
            ]
        )
        == 0
    )
    capsys.readouterr()
    for name in (DETAILED_CSV, GRADESCOPE_CSV):
        assert _csv(out / name) == _csv(base / "local" / name), name
    shards = sorted(p.name for p in (out / "submitit").glob("shard-*.json"))
    assert shards == [
        "shard-1-of-2.json",
        "shard-2-of-2.json",
    ]  # an array of 2, each recorded its part
    per_shard = [json.loads((out / "submitit" / s).read_text())["reports"] for s in shards]
    assert all(per_shard) and not set(per_shard[0]) & set(per_shard[1])  # identical code: one shard
    assert len(json.loads((out / STATE_FILE).read_text())["reports"]) == 3
    assert sorted(p.name for p in (out / "results").iterdir()) == [f"{n}.json" for n in ("ann", "ben", "cat", "dan")]


def _flaky(marker: str, value: int) -> int:
    """Fails the first time it runs for ``marker`` (a file), succeeds the second."""
    path = Path(marker)
    if not path.exists():
        path.write_text("failed once")
        raise RuntimeError("a node went away")
    return value * 10


def _broken(value: int) -> int:
    raise ValueError(f"task {value} is broken")


def test_a_failed_task_is_retried_once_then_reported(tmp_path):
    options = ClusterOptions(executor="submitit-local")
    tasks = [(str(tmp_path / "a"), 1), (str(tmp_path / "b"), 2)]
    assert run_array(_flaky, tasks, options, tmp_path / "flaky", name="flaky") == [10, 20]
    with pytest.raises(ClusterError, match=r"2 of 2 tasks failed twice .*task 2 is broken"):
        run_array(_broken, [(1,), (2,)], options, tmp_path / "broken", name="broken")


def test_checkpoints_on_slurm_through_submitit_local_write_the_local_table(tmp_path, monkeypatch):
    """3 tiny random models in 2 array tasks: the merged table is the unsharded one."""
    import numpy as np
    import torch
    import yaml

    from tools.checkpoints import cli
    from tools.checkpoints.reference_model import Architecture, build_model
    from tools.checkpoints.results import read_results

    monkeypatch.setenv("LMGRADE_SUBMITIT_CLUSTER", "local")
    config = {
        "model_config": {"n_embd": 8, "n_head": 2, "n_positions": 16, "n_layer": 1},
        "batch_size": 4,
        "seq_len": 16,
        "num_training_steps": 10,
        "grad_accumulation_steps": 1,
    }
    for i in range(3):
        torch.manual_seed(i)
        folder = tmp_path / "export" / f"s{i:02d}"
        folder.mkdir(parents=True)
        torch.save(build_model(Architecture(40, 8, 2, 16, 1), "pre_ln").state_dict(), folder / "model.pt")
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
    tokens = tmp_path / "t.npz"
    np.savez(tokens, test=np.random.default_rng(0).integers(0, 40, 300).astype(np.uint16))
    common = [
        "checkpoints",
        "cmu_11667_a2",
        str(tmp_path / "export"),
        "--test-tokens",
        str(tokens),
        "--device",
        "cpu",
        "--no-progress",
        "--variant",
        "pre_ln",
        "--workers",
        "1",
        "--threads",
        "1",
    ]
    assert cli.main([*common, "-o", str(tmp_path / "local.csv")]) == 0
    assert (
        cli.main(
            [
                *common,
                "-o",
                str(tmp_path / "slurm.csv"),
                "--executor",
                "slurm",
                "--shards",
                "2",
                "--gradescope-csv",
                str(tmp_path / "gs.csv"),
            ]
        )
        == 0
    )

    def table(path: Path) -> list[dict]:
        rows, _ = read_results(path)
        return [{k: v for k, v in vars(r).items() if not k.endswith("seconds")} for r in rows]  # timings

    assert table(tmp_path / "slurm.json") == table(tmp_path / "local.json")
    assert len(table(tmp_path / "local.json")) == 3
    _, meta = read_results(tmp_path / "slurm.json")
    assert meta["shard"] == "merged 2/2"
    assert sorted(p.name for p in (tmp_path / "slurm-submitit").glob("shard-*.json")) == [
        "shard-1-of-2.json",
        "shard-2-of-2.json",
    ]
    assert (tmp_path / "gs.csv").read_text().startswith("Name,SID,Email,Score")
