"""Training recipe for real checkpoints: GPT-tiny on the synthetic corpus, and on WikiText-2.

``python -m tools.checkpoints.recipe synthetic`` regenerates ``fixtures/checkpoints/``: the
corpus of ``corpus.py``, then the reference DecoderLM in the GPT-tiny configuration
(n_embd 32, n_head 2, n_positions 128, n_layer 2; the course's ``configs/GPT-tiny.yaml``)
trained as the course's ``train.py`` trains (random contiguous windows, AdamW with betas
(0.9, 0.95), linear warm-up then cosine decay, mean next-token cross-entropy). One run gives
the passing checkpoint and, from an early step, the undertrained one; a second run trains the
post-LN variant. Defaults (those of the committed fixtures): 1,000 steps of 32 x 128 tokens,
max_lr 2e-3 (GPT-tiny's config has 2,000 steps at 5e-4; a shorter, hotter run keeps the
recipe at about two minutes per run on one CPU thread). Weights are stored as safetensors (no pickles in fixtures).

``python -m tools.checkpoints.recipe wikitext --minutes 5`` trains the same shape with the real
GPT-1 BPE vocabulary (40,479) on the WikiText-2 train split for a few CPU minutes and prints the
checker's perplexity of the trained and of the untrained model on the test split.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import save_file

from grader import project_root
from tools.checkpoints.config_file import StudentConfig, flop_budget
from tools.checkpoints.corpus import N_VOCAB, write_corpus
from tools.checkpoints.perplexity import ScoringOptions, choose_scorer, plan_windows, score_stream
from tools.checkpoints.reference_model import Architecture, build_model, count_params

FIXTURES = project_root() / "fixtures" / "checkpoints"
WIKITEXT = Path("/work/shared/data/wikitext2_gpt1")
GPT_TINY = {"n_embd": 32, "n_head": 2, "n_positions": 128, "n_layer": 2}


@dataclass(frozen=True)
class TrainingRun:
    """A course-style training configuration (the fields of the course's YAML config)."""

    n_vocab: int
    n_embd: int = 32
    n_head: int = 2
    n_positions: int = 128
    n_layer: int = 2
    batch_size: int = 32
    seq_len: int = 128
    num_warmup_steps: int = 10
    num_training_steps: int = 2000
    grad_accumulation_steps: int = 1
    min_lr: float = 1e-4
    max_lr: float = 5e-4
    variant: str = "pre_ln"
    seed: int = 0

    @property
    def arch(self) -> Architecture:
        return Architecture(self.n_vocab, self.n_embd, self.n_head, self.n_positions, self.n_layer)

    def config_yaml(self, tokenizer: str) -> dict:
        """The config as the course's train.py writes it (plus n_vocab, which the course
        takes from tiktoken; the checker reads the vocabulary from the shapes anyway)."""
        model_config = {k: getattr(self, k) for k in GPT_TINY}
        training = {
            k: getattr(self, k)
            for k in (
                "batch_size",
                "seq_len",
                "num_warmup_steps",
                "num_training_steps",
                "grad_accumulation_steps",
                "min_lr",
                "max_lr",
            )
        }
        return {
            "output_dir": "outputs/GPT-tiny",
            "tokenizer_encoding": tokenizer,
            "n_vocab": self.n_vocab,
            "device": "auto",
            "model_config": model_config,
            **training,
            "block_variant": self.variant,
        }


def cosine_lr(step: int, run: TrainingRun) -> float:
    """The course's schedule: linear warm-up to max_lr, half-cosine down to min_lr, then flat."""
    if step < run.num_warmup_steps:
        return run.max_lr * step / run.num_warmup_steps
    if step < run.num_training_steps:
        progress = (step - run.num_warmup_steps) / (run.num_training_steps - run.num_warmup_steps)
        return run.min_lr + 0.5 * (run.max_lr - run.min_lr) * (1 + math.cos(math.pi * progress))
    return run.min_lr


def train(
    run: TrainingRun,
    train_ids: np.ndarray,
    snapshot_steps: tuple[int, ...] = (),
    max_seconds: float | None = None,
    log_every: int = 200,
) -> dict[int, dict[str, torch.Tensor]]:
    """Train; returns ``{completed steps: state_dict}`` for each snapshot and the end."""
    torch.manual_seed(run.seed)
    generator = torch.Generator().manual_seed(run.seed)
    model = build_model(run.arch, run.variant).train()
    for module in model.modules():  # build_model sets dropout 0 for scoring; train as the course
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.1
    tokens = torch.from_numpy(train_ids.astype(np.int64))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0, betas=(0.9, 0.95))
    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    start, done = time.perf_counter(), 0
    while done < run.num_training_steps:
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            break
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(done, run)
        loss = _train_step(model, optimizer, tokens, run, generator)
        done += 1
        if done in snapshot_steps:
            snapshots[done] = _cpu_state(model)
        if log_every and done % log_every == 0:
            print(
                f"  step {done:5d}  loss {loss:.3f}  {time.perf_counter() - start:6.1f}s",
                file=sys.stderr,
                flush=True,
            )
    snapshots[done] = _cpu_state(model)
    return snapshots


def _train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    tokens: torch.Tensor,
    run: TrainingRun,
    generator: torch.Generator,
) -> float:
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for _ in range(run.grad_accumulation_steps):
        starts = torch.randint(0, len(tokens) - run.seq_len, (run.batch_size,), generator=generator)
        batch = tokens[starts[:, None] + torch.arange(run.seq_len)]  # (B, S)
        logits = model(batch)  # (B, S, V)
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), batch[:, 1:].flatten())
        (loss / run.grad_accumulation_steps).backward()
        total += float(loss.detach()) / run.grad_accumulation_steps
    optimizer.step()
    return total


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def checker_perplexity(state: dict[str, torch.Tensor], run: TrainingRun, test_ids: np.ndarray) -> float:
    """The checker's perplexity (fp32, disjoint windows) of a state dict on a token array."""
    model = build_model(run.arch, run.variant)
    model.load_state_dict(state)
    tokens = torch.from_numpy(test_ids.astype(np.int64))
    plan = plan_windows(len(tokens), run.n_positions)
    options = ScoringOptions(device=torch.device("cpu"))
    scorer, _ = choose_scorer(model, tokens, plan, options, run.n_vocab)
    return score_stream(scorer, tokens, plan, options).perplexity


def save_checkpoint(state: dict[str, torch.Tensor], path: Path, run: TrainingRun, metadata: dict[str, str]) -> None:
    """Safetensors file plus its course-style YAML config beside it (``<stem>.yaml``)."""
    save_file(state, str(path), metadata={k: str(v) for k, v in metadata.items()})
    config = run.config_yaml(metadata.get("tokenizer", "synthetic-512"))
    path.with_suffix(".yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def make_synthetic_fixtures(
    out_dir: Path = FIXTURES,
    steps: int = 1000,
    undertrained_step: int = 40,
    max_lr: float = 2e-3,
    seed: int = 0,
) -> dict:
    """Corpus, two pre-LN checkpoints (trained, undertrained) and a post-LN one, with figures."""
    work = out_dir / "_corpus"
    corpus = write_corpus(work, seed=seed)
    train_ids = np.load(corpus.tokens_npz)["train"]
    test_ids = np.load(corpus.test_npz)["test"]
    np.savez(out_dir / "synthetic_test.npz", test=test_ids)
    run = TrainingRun(n_vocab=N_VOCAB, num_training_steps=steps, max_lr=max_lr, seed=seed)
    figures = {"corpus_floor_perplexity": corpus.test_floor_perplexity, "checkpoints": {}}
    for variant in ("pre_ln", "post_ln"):
        this = replace(run, variant=variant)
        start = time.perf_counter()
        snaps = train(this, train_ids, snapshot_steps=(undertrained_step,) if variant == "pre_ln" else ())
        seconds = time.perf_counter() - start
        names = {steps: f"gpt_tiny_synthetic_{variant}"}
        if variant == "pre_ln":
            names[undertrained_step] = "gpt_tiny_synthetic_undertrained"
        for step, name in names.items():
            ran = replace(this, num_training_steps=step)
            figures["checkpoints"][name] = _save_and_score(
                snaps[step], ran, test_ids, out_dir / f"{name}.safetensors", seconds
            )
    (out_dir / "figures.json").write_text(json.dumps(figures, indent=2) + "\n")
    for path in work.iterdir():
        path.unlink()
    work.rmdir()
    return figures


def _save_and_score(
    state: dict[str, torch.Tensor],
    run: TrainingRun,
    test_ids: np.ndarray,
    path: Path,
    seconds: float,
) -> dict:
    ppl = checker_perplexity(state, run, test_ids)
    model = build_model(run.arch, run.variant)
    n_params = count_params(model)
    config = StudentConfig(
        path=None,
        training={
            k: getattr(run, k) for k in ("num_training_steps", "grad_accumulation_steps", "batch_size", "seq_len")
        },
    )
    budget = flop_budget(n_params, run.n_layer, run.n_embd, run.n_positions, config, 1e17)
    info = {
        "variant": run.variant,
        "steps": run.num_training_steps,
        "test_perplexity": round(ppl, 4),
        "n_params": n_params,
        "train_flops": budget.train_flops,
        "train_seconds_whole_run": round(seconds, 1),
    }
    save_checkpoint(state, path, run, {"tokenizer": "synthetic-512", **{k: str(v) for k, v in info.items()}})
    print(f"{path.name}: {json.dumps(info)}", file=sys.stderr)
    return info


def wikitext_benchmark(
    minutes: float,
    data_dir: Path = WIKITEXT,
    out: Path | None = None,
    test_tokens: int | None = None,
    max_lr: float = 3e-3,
) -> dict:
    """Train GPT-tiny (GPT-1 BPE vocabulary) on WikiText-2 train for ``minutes`` on the CPU and
    return the checker's test perplexity of the trained and the untrained model."""
    train_ids = np.load(data_dir / "wiki.train.npz")["tokens"]
    test_ids = np.load(data_dir / "wiki.test.npz")["tokens"][:test_tokens]
    n_vocab = 40479
    run = TrainingRun(
        n_vocab=n_vocab,
        batch_size=16,
        num_training_steps=100_000,
        num_warmup_steps=20,
        max_lr=max_lr,
        min_lr=max_lr / 10,
    )
    untrained = _cpu_state(build_model(run.arch, run.variant))
    start = time.perf_counter()
    snaps = train(run, train_ids, max_seconds=minutes * 60, log_every=50)
    steps, state = max(snaps.items())
    seconds = time.perf_counter() - start
    ran = replace(run, num_training_steps=steps)
    result = {
        "train_steps": steps,
        "train_seconds": round(seconds, 1),
        "train_tokens": steps * run.batch_size * run.seq_len,
        "test_tokens": len(test_ids),
        "untrained_perplexity": checker_perplexity(untrained, ran, test_ids),
        "trained_perplexity": checker_perplexity(state, ran, test_ids),
        "run": asdict(ran),
    }
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        save_checkpoint(state, out / "wikitext_gpt_tiny.safetensors", ran, {"tokenizer": "gpt1-bpe-40479"})
    return result


def main(argv: list[str] | None = None) -> int:
    """``synthetic`` regenerates the fixtures; ``wikitext`` runs the real-text benchmark."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.checkpoints.recipe",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("synthetic", help="regenerate fixtures/checkpoints")
    p.add_argument("--out", type=Path, default=FIXTURES)
    p.add_argument("--steps", type=int, default=1000, help="(the committed fixtures: 1000)")
    p.add_argument("--undertrained-step", type=int, default=40)
    p.add_argument("--max-lr", type=float, default=2e-3, help="(the committed fixtures: 2e-3)")
    p = sub.add_parser("wikitext", help="train on WikiText-2 for a few minutes, compare perplexities")
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--data", type=Path, default=WIKITEXT)
    p.add_argument("--test-tokens", type=int, default=None, help="score only the first N test tokens")
    p.add_argument("--out", type=Path, default=None, help="also save the trained weights here")
    for p in sub.choices.values():
        p.add_argument(
            "--threads",
            type=int,
            default=1,
            help="torch CPU threads (default 1: GPT-tiny's small ops gain nothing from more, "
            "and on a shared machine idle OpenMP workers stall every op)",
        )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.what == "synthetic":
        args.out.mkdir(parents=True, exist_ok=True)
        figures = make_synthetic_fixtures(args.out, args.steps, args.undertrained_step, args.max_lr)
    else:
        figures = wikitext_benchmark(args.minutes, args.data, args.out, args.test_tokens)
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
