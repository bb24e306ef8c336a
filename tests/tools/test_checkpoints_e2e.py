"""The checkpoint checker end to end: CLI, demo export, shards and merge, worker processes,
prefetching, the committed trained fixtures, the training recipe and real WikiText-2 ids."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tools.checkpoints import cli, demo, worker
from tools.checkpoints.corpus import SyntheticGrammar
from tools.checkpoints.export import read_submissions
from tools.checkpoints.loader import LoadLimits
from tools.checkpoints.recipe import TrainingRun, checker_perplexity, train
from tools.checkpoints.reference_model import VARIANTS, Architecture, build_model
from tools.checkpoints.results import read_results
from tools.checkpoints.runner import CheckSettings, Prefetcher, run_check

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "checkpoints"
TINY_CONFIG = {
    "model_config": {"n_embd": 8, "n_head": 2, "n_positions": 16, "n_layer": 1},
    "batch_size": 4,
    "seq_len": 16,
    "num_training_steps": 10,
    "grad_accumulation_steps": 1,
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small models gain nothing from threads; idle OpenMP workers stall a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def synthetic_slice(tmp_path_factory) -> Path:
    """The first 4,096 tokens of the committed synthetic test file (keeps the tests fast)."""
    ids = np.load(FIXTURES / "synthetic_test.npz")["test"][:4096]
    path = tmp_path_factory.mktemp("tokens") / "test.npz"
    np.savez(path, test=ids)
    return path


def tiny_export(root: Path, count: int, vocab: int = 40) -> Path:
    """``count`` plain submission folders of tiny random models (distinct seeds)."""
    for i in range(count):
        torch.manual_seed(i)
        model = build_model(Architecture(vocab, 8, 2, 16, 1), "pre_ln")
        folder = root / f"s{i:02d}"
        folder.mkdir(parents=True)
        torch.save(model.state_dict(), folder / "model.pt")
        (folder / "config.yaml").write_text(yaml.safe_dump(TINY_CONFIG))
    return root


def tiny_tokens(path: Path, n: int = 300, vocab: int = 40) -> Path:
    np.savez(path, test=np.random.default_rng(0).integers(0, vocab, n).astype(np.uint16))
    return path


# -- the demo: pass, fail, corrupt, malicious, ... in one run that exits 0 ----------------------


def test_demo_export_rows_are_as_expected_and_the_payload_never_runs(tmp_path, synthetic_slice):
    settings = CheckSettings(test_tokens=synthetic_slice, device="cpu")
    assert demo.run_demo(tmp_path, settings) == 0
    rows, meta = read_results(tmp_path / "results.json")
    by_id = {r.submission_id: r for r in rows}
    assert by_id["submission_1001"].passed and by_id["submission_1001"].perplexity < 50
    assert not by_id["submission_1002"].passed and by_id["submission_1002"].perplexity > 50
    assert by_id["submission_1003"].error_kind == "corrupt"
    assert by_id["submission_1004"].error_kind == "unsafe" and "builtins.exec" in by_id["submission_1004"].error
    assert by_id["submission_1007"].variant == "post_ln" and by_id["submission_1007"].passed
    assert by_id["submission_1010"].error_kind == "budget" and by_id["submission_1010"].perplexity < 50
    assert not (tmp_path / "PWNED").exists()
    assert by_id["submission_1001"].students == "Ada Lovelace"
    assert by_id["submission_1001"].tokens_scored == 4095 and meta["test_tokens_count"] == 4096
    scores = (tmp_path / "gradescope_scores.csv").read_text().splitlines()
    assert scores[0] == "Name,SID,Email,Score" and "Ada Lovelace,2023000,ada.lovelace@andrew.cmu.edu,20.0" in scores


def test_cli_exit_codes_and_parser_registration(tmp_path, synthetic_slice):
    export, marker = demo.materialise_demo(tmp_path)
    keep = [
        c.submission_id
        for c in demo.CASES
        if c.submission_id in ("submission_1001", "submission_1002", "submission_1003", "submission_1004")
    ]
    for folder in export.iterdir():
        if folder.is_dir() and folder.name not in keep:
            for path in sorted(folder.rglob("*"), reverse=True):
                path.unlink() if path.is_file() else path.rmdir()
            folder.rmdir()
    out = tmp_path / "r.csv"
    code = cli.main(
        [
            "checkpoints",
            "cmu_11667_a2",
            str(export),
            "--test-tokens",
            str(synthetic_slice),
            "--device",
            "cpu",
            "--variant",
            "pre_ln",
            "--no-progress",
            "-o",
            str(out),
        ]
    )
    assert code == 0 and not marker.exists()
    rows = {r.submission_id: r for r in read_results(out)[0]}
    assert [rows[k].passed for k in keep] == [True, False, False, False]
    assert (rows["submission_1003"].error_kind, rows["submission_1004"].error_kind) == (
        "corrupt",
        "unsafe",
    )
    assert (
        cli.main(
            [
                "checkpoints",
                "cmu_11667_a2",
                str(export),
                "--test-tokens",
                str(tmp_path / "nope.npz"),
                "--no-progress",
                "-o",
                str(out),
            ]
        )
        == 2
    )
    parser = argparse.ArgumentParser()
    cli.add_parsers(parser.add_subparsers())
    args = parser.parse_args(["checkpoints", "cmu_11667_a2", "x", "--test-tokens", "t.npz", "--shard", "2/4"])
    assert args.func is cli.cmd_checkpoints and args.shard == (2, 4)
    assert parser.parse_args(["checkpoints-merge", "a.json", "-o", "m.csv"]).func is cli.cmd_merge


def test_registering_the_verbs_does_not_import_torch():
    code = (
        "import argparse, sys; import tools.checkpoints.cli as c; "
        "c.add_parsers(argparse.ArgumentParser().add_subparsers()); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert cli.VARIANTS == VARIANTS


# -- shards, merge, worker processes, prefetching -----------------------------------------------


def test_shards_merge_to_the_unsharded_result(tmp_path):
    export = tiny_export(tmp_path / "export", 5)
    tokens = tiny_tokens(tmp_path / "t.npz")
    common = [
        "checkpoints",
        "cmu_11667_a2",
        str(export),
        "--test-tokens",
        str(tokens),
        "--device",
        "cpu",
        "--no-progress",
        "--variant",
        "pre_ln",
    ]
    assert cli.main([*common, "-o", str(tmp_path / "all.csv")]) == 0
    for k in (1, 2):
        assert cli.main([*common, "--shard", f"{k}/2", "-o", str(tmp_path / f"shard{k}.csv")]) == 0
    shard1 = [r.submission_id for r in read_results(tmp_path / "shard1.json")[0]]
    assert shard1 == ["s00", "s02", "s04"]
    assert (
        cli.main(
            [
                "checkpoints-merge",
                str(tmp_path / "shard1.json"),
                str(tmp_path / "shard2.json"),
                "-o",
                str(tmp_path / "merged.csv"),
                "--gradescope-csv",
                str(tmp_path / "gs.csv"),
            ]
        )
        == 0
    )
    merged, meta = read_results(tmp_path / "merged.json")
    whole, _ = read_results(tmp_path / "all.json")
    assert [(r.submission_id, r.perplexity) for r in merged] == [(r.submission_id, r.perplexity) for r in whole]
    assert meta["shard"] == "merged 2/2"
    assert cli.main(["checkpoints-merge", str(tmp_path / "shard1.json"), "-o", str(tmp_path / "m.csv")]) == 2


@pytest.mark.parametrize("processes", [False, True])
def test_several_workers_give_the_same_rows(tmp_path, processes):
    export = tiny_export(tmp_path / "export", 4)
    (export / "s01" / "model.pt").write_bytes(b"broken")
    tokens = tiny_tokens(tmp_path / "t.npz")
    submissions = read_submissions(export)
    one, _ = run_check(submissions, CheckSettings(test_tokens=tokens, device="cpu", variant="pre_ln", workers=1))
    two, meta = run_check(
        submissions,
        CheckSettings(
            test_tokens=tokens,
            device="cpu",
            variant="pre_ln",
            workers=2,
            threads=1,
            processes=processes,
        ),
    )
    assert meta["devices"] == ["cpu", "cpu"]
    assert [(r.submission_id, r.perplexity, r.error_kind) for r in two] == [
        (r.submission_id, r.perplexity, r.error_kind) for r in one
    ]
    assert one[1].error_kind == "corrupt" and one[0].perplexity > 1


def test_prefetcher_loads_in_the_background_in_order(tmp_path, monkeypatch):
    export = tiny_export(tmp_path / "export", 4)
    seen_threads = []
    real = worker.load_checkpoint

    def spy(*args, **kwargs):
        seen_threads.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(worker, "load_checkpoint", spy)
    submissions = read_submissions(export)
    items = list(Prefetcher(submissions, ("pre_ln",), LoadLimits(), depth=2))
    assert [s.submission_id for s, _ in items] == [s.submission_id for s in submissions]
    assert set(seen_threads) == {"checkpoint-prefetch"}


def test_stride_beyond_a_models_window_means_disjoint_windows(tmp_path):
    export = tiny_export(tmp_path / "export", 1)
    tokens = tiny_tokens(tmp_path / "t.npz")
    subs = read_submissions(export)
    plain = run_check(subs, CheckSettings(test_tokens=tokens, device="cpu", variant="pre_ln"))[0][0]
    wide = run_check(subs, CheckSettings(test_tokens=tokens, device="cpu", variant="pre_ln", stride=999))
    slide = run_check(subs, CheckSettings(test_tokens=tokens, device="cpu", variant="pre_ln", stride=4))
    assert wide[0][0].perplexity == plain.perplexity and wide[1]["settings"]["stride"] == 999
    assert slide[0][0].tokens_scored == plain.tokens_scored == 299
    assert slide[0][0].perplexity != plain.perplexity  # more context per token


def test_no_fast_path_gives_the_same_perplexity(tmp_path):
    export = tiny_export(tmp_path / "export", 1)
    tokens = tiny_tokens(tmp_path / "t.npz")
    subs = read_submissions(export)
    fast = run_check(subs, CheckSettings(test_tokens=tokens, device="cpu", variant="pre_ln"))[0][0]
    plain = run_check(subs, CheckSettings(test_tokens=tokens, device="cpu", variant="pre_ln", fast_path=False))[0][0]
    assert plain.scoring_path == "plain" and "tiled-head" in fast.scoring_path
    assert abs(plain.mean_nll / fast.mean_nll - 1) < 1e-6


def test_bf16_rows_are_close_to_fp32(tmp_path, synthetic_slice):
    folder = tmp_path / "one"
    folder.mkdir()
    torch.save(demo.fixture_state(demo.TRAINED), folder / "model.pt")
    (folder / "config.yaml").write_text(yaml.safe_dump(demo.fixture_config(demo.TRAINED)))
    subs = read_submissions(folder)
    fp32 = run_check(subs, CheckSettings(test_tokens=synthetic_slice, device="cpu", variant="pre_ln"))[0][0]
    bf16 = run_check(
        subs,
        CheckSettings(test_tokens=synthetic_slice, device="cpu", variant="pre_ln", dtype="bf16"),
    )[0][0]
    assert bf16.dtype == "bf16" and fp32.passed and bf16.passed
    assert abs(bf16.perplexity / fp32.perplexity - 1) < 2e-2


# -- committed fixtures and the recipe ----------------------------------------------------------


def test_fixtures_are_small_and_hold_no_pickles():
    files = [p for p in FIXTURES.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 10 * 2**20
    for path in files:
        head = path.read_bytes()[:2]
        assert head != b"\x80\x02", f"{path} is a pickle"
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                assert all(archive[k].dtype == np.uint16 for k in archive.files)
    figures = json.loads((FIXTURES / "figures.json").read_text())
    info = figures["checkpoints"]
    assert info["gpt_tiny_synthetic_pre_ln"]["test_perplexity"] < 50
    assert info["gpt_tiny_synthetic_undertrained"]["test_perplexity"] > 50
    assert all(v["train_flops"] < 1e17 for v in info.values())


def test_recipe_trains_a_few_steps_and_improves(tmp_path):
    ids, _ = SyntheticGrammar(seed=3).stream(20_000)
    test, _ = SyntheticGrammar(seed=4).stream(1_000)
    run = TrainingRun(
        n_vocab=512,
        n_positions=32,
        batch_size=8,
        seq_len=32,
        num_training_steps=25,
        num_warmup_steps=2,
        max_lr=3e-3,
    )
    states = train(run, ids, snapshot_steps=(1,), log_every=0)
    assert sorted(states) == [1, 25]
    assert checker_perplexity(states[25], run, test) < 0.6 * checker_perplexity(states[1], run, test)


# -- real text ------------------------------------------------------------------------------


def test_wikitext_slice_real_vocabulary(tmp_path):
    tokens = FIXTURES / "wikitext2_test_slice.npz"
    ids = np.load(tokens)["tokens"]
    assert ids.dtype == np.uint16 and ids.max() < 40479
    export = tmp_path / "export"
    for name, vocab in (("gpt1_vocab", 40479), ("too_small", 1000)):
        torch.manual_seed(0)
        model = build_model(Architecture(vocab, 8, 2, 64, 1), "pre_ln")
        (export / name).mkdir(parents=True)
        torch.save(model.state_dict(), export / name / "model.pt")
        config = {
            **TINY_CONFIG,
            "model_config": {"n_embd": 8, "n_head": 2, "n_positions": 64, "n_layer": 1},
        }
        (export / name / "config.yaml").write_text(yaml.safe_dump(config))
    rows, _ = run_check(read_submissions(export), CheckSettings(test_tokens=tokens, device="cpu", variant="pre_ln"))
    good, small = rows
    assert good.n_vocab == 40479 and good.tokens_scored == 4095
    assert 0.5 * 40479 < good.perplexity < 2 * 40479  # an untrained model is near uniform
    assert small.error_kind == "vocabulary"
