"""Project tests for IFT6135 A2 beyond the graded suite: the provided data set and logs,
run_exp.py and the learning-curve plot.

The reference's files import each other by bare names (`utils`, `lstm_solution`), which other
assignments use too, so run_exp.py runs in a subprocess and single modules are loaded under
private names.
"""

import importlib.util
import json
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest

from tools.mila_ift6135_a2.plot_curves import DATA, REFERENCE, load_run, plot_curves, run_demo

PER_EPOCH = ("train_losses", "train_ppls", "train_times", "valid_losses", "valid_ppls", "valid_times")


def _load(relpath, name):
    spec = importlib.util.spec_from_file_location(name, REFERENCE / relpath)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def wikitext2():
    return _load("utils/wikitext2.py", "_mila_wikitext2").Wikitext2


@pytest.mark.parametrize("break_mode", ["none", "lines", "complete"])
def test_wikitext2_examples(wikitext2, break_mode):
    dataset = wikitext2(str(DATA), split="validation", break_mode=break_mode)
    assert len(dataset) > 0
    targets = 0
    for index in range(len(dataset)):
        example = dataset[index]
        source, target, mask = example["source"], example["target"], example["mask"]
        assert source.shape == target.shape == mask.shape == (256,)
        assert str(source.dtype) == str(target.dtype) == "torch.int64" and str(mask.dtype) == "torch.float32"
        n = int(mask.sum())
        assert n >= 1 and bool((mask[:n] == 1).all()) and bool((mask[n:] == 0).all())
        assert bool((source[1:n] == target[: n - 1]).all()), "target is source shifted by one"
        assert bool((source[n:] == 0).all()) and bool((target[n:] == 0).all()), "zero padding"
        assert bool((source[:n] > 0).all())
        targets += n
    with np.load(DATA / "wiki.validation.npz") as data:
        tokens, documents = data["tokens"].size, data["sizes"].size
    # Every token but the first of each span (stream, document, packed group) is a target once.
    spans = {"none": 1, "lines": documents}.get(break_mode)
    if spans is not None:
        assert targets == tokens - spans
    else:
        assert tokens - documents <= targets < tokens


def test_wikitext2_rejects_unknown_split(wikitext2):
    with pytest.raises(ValueError, match="split"):
        wikitext2(str(DATA), split="valid")


def test_save_logs_writes_course_files_and_json(tmp_path):
    save_logs = _load("utils/data_utils.py", "_mila_data_utils").save_logs
    args = Namespace(log_dir=str(tmp_path), exp_id="run", model="gpt1", layers=2, optimizer="adam")
    folder = Path(
        save_logs(args, [5.0, 4.0], [148.4, 54.6], [1.0, 1.1], [5.1, 4.5], [164.0, 90.0], [0.2, 0.2], 4.4, 81.5, 0.3)
    )
    assert (folder / "train_ppl.txt").read_text().split() == ["148.4", "54.6"]
    assert (folder / "test_ppl.txt").read_text().split() == ["81.5"]
    assert json.loads((folder / "args.json").read_text())["model"] == "gpt1"
    logs = json.loads((folder / "logs.json").read_text())
    assert logs["valid_ppls"] == [164.0, 90.0] and logs["test_ppl"] == 81.5
    # The plot reads both layouts: logs.json, and the course's text files alone.
    (folder / "logs.json").unlink()
    run = load_run(folder)
    assert run["valid_ppls"] == [164.0, 90.0] and run["label"] == "GPT1 2L adam"


def test_run_demo_writes_png_and_per_epoch_logs(tmp_path):
    import matplotlib.image

    png = run_demo(tmp_path)
    image = matplotlib.image.imread(png)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    logs = json.loads((tmp_path / "logs" / "demo_config2" / "logs.json").read_text())
    for name in PER_EPOCH:
        assert len(logs[name]) == 2, name
        assert all(np.isfinite(logs[name]))
    assert all(p > 1 for p in logs["train_ppls"] + logs["valid_ppls"])
    assert logs["args"]["model"] == "lstm" and logs["args"]["optimizer"] == "adamw"


def test_run_exp_loads_an_embeddings_file(tmp_path):
    """The TA path: --embeddings names a real embeddings.npz (tokens and position arrays)."""
    generator = np.random.default_rng(0)
    np.savez(
        tmp_path / "embeddings.npz",
        tokens=(0.02 * generator.standard_normal((40479, 8))).astype(np.float32),
        position=(0.02 * generator.standard_normal((32, 8))).astype(np.float32),
    )
    command = [
        sys.executable,
        "run_exp.py",
        "--model",
        "gpt1",
        "--num_heads",
        "2",
        "--layers",
        "1",
        "--embeddings",
        str(tmp_path / "embeddings.npz"),
        "--max_length",
        "32",
        "--batch_size",
        "2",
        "--epochs",
        "1",
        "--max_steps",
        "2",
        "--max_eval_steps",
        "1",
        "--device",
        "cpu",
        "--num_workers",
        "0",
        "--data_folder",
        str(DATA),
        "--log",
        "--log_dir",
        str(tmp_path / "logs"),
        "--exp_id",
        "emb",
    ]
    result = subprocess.run(command, check=False, cwd=REFERENCE, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    # Frozen pretrained embeddings: only the transformer blocks learn.
    total, learnable = _counts(result.stdout)
    assert learnable < total
    logs = json.loads((tmp_path / "logs" / "emb" / "logs.json").read_text())
    assert len(logs["valid_ppls"]) == 1


def _counts(stdout):
    line = next(line for line in stdout.splitlines() if line.startswith("Initialized"))
    numbers = [int(word) for word in line.replace(",", " ").split() if word.isdigit()]
    return numbers[0], numbers[1]


def test_plot_curves_cli(tmp_path):
    runs = []
    for index, (model, optimizer) in enumerate([("lstm", "adam"), ("gpt1", "sgd")]):
        folder = tmp_path / f"exp{index}"
        folder.mkdir()
        logs = {
            "args": {"model": model, "layers": 1, "optimizer": optimizer},
            "train_ppls": [900.0, 400.0, 300.0],
            "valid_ppls": [800.0, 500.0, 450.0],
            "train_times": [10.0, 10.0, 10.0],
            "valid_times": [1.0, 1.0, 1.0],
        }
        (folder / "logs.json").write_text(json.dumps(logs))
        runs.append(str(folder))
    from tools.mila_ift6135_a2.plot_curves import main

    out = tmp_path / "curves.png"
    assert main([*runs, "--out", str(out)]) == 0
    assert out.is_file() and out.stat().st_size > 10_000


def test_plot_curves_needs_per_epoch_fields(tmp_path):
    (tmp_path / "logs.json").write_text(json.dumps({"train_ppls": [1.0]}))
    with pytest.raises(ValueError, match="valid_ppls"):
        plot_curves([tmp_path], tmp_path / "x.png")
