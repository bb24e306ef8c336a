"""Throughput of the checkpoint checker against a naive evaluation loop, same run, same files.

    python benchmarks/checkpoint_speed.py --quick           # a few minutes on a 2-core CPU
    python benchmarks/checkpoint_speed.py --device cuda     # adds the GPU sections

Both sides score the same GPT-tiny-shaped checkpoints (course vocabulary 50,257, random
weights; ``model.pt`` files in a temporary export) on the same test tokens (WikiText-2 test ids
when available, else the committed slice), in alternating rounds so machine load hits both.

* checker: ``tools.checkpoints.runner.run_check`` (prefetching loader, tokens on the device
  once, chunked output layer on scored rows, SDPA when it matches, inference_mode).
* naive: a Hugging Face tutorial-style loop per checkpoint: ``torch.load`` + ``load_state_dict``
  in line, the token file re-read, windows of n_positions with stride n_positions, batches of
  16 padded to full length with an attention mask, full (B, S, V) logits, mean cross-entropy per
  batch, perplexity = exp(mean of the batch means) under ``torch.no_grad``.

Throughput is test tokens per second of wall time including loading (K checkpoints x N
tokens / seconds). In the same run it measures the machine's fp32 matmul peak (best of several
``torch.matmul`` of large square matrices, all threads) and prints the checker's achieved
FLOP/s as a fraction of it, end to end (loading included) and for the scoring alone; a forward
pass costs ``2 * params + 4 * n_layer * n_embd * n_positions`` FLOPs per token (the course's
count for training, divided by 3: the weights' multiply-adds plus the attention scores).
On a GPU it also reports checkpoints per minute over 100 GPT-tiny-sized
checkpoints and the fraction of the GPU's bf16 dense peak that the forward pass reaches on a
GPT-2-small-sized model. The speedup is printed last.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.checkpoints.export import read_submissions
from tools.checkpoints.perplexity import (
    ScoringOptions,
    choose_scorer,
    plan_windows,
    score_stream,
)
from tools.checkpoints.reference_model import Architecture, build_model, decoder_class
from tools.checkpoints.runner import CheckSettings, run_check

WIKITEXT_TEST = Path("/work/shared/data/wikitext2_gpt1/wiki.test.npz")
SLICE = ROOT / "fixtures" / "checkpoints" / "wikitext2_test_slice.npz"
GPT_TINY = Architecture(n_vocab=50257, n_embd=32, n_head=2, n_positions=128, n_layer=2)
GPT2_SMALL = Architecture(n_vocab=50257, n_embd=768, n_head=12, n_positions=1024, n_layer=12)
BF16_PEAK = {
    "H100 SXM": 989.4e12,
    "H100 PCIe": 756e12,
    "H100": 989.4e12,
    "H200": 989.4e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10": 125e12,
    "A6000": 154.8e12,
}
NAIVE_BATCH = 16
ACHIEVED: dict[str, float] = {}  # fp32 FLOP/s of the checker, reported against the peak at the end
PEAK_REPEATS = 10


def make_export(root: Path, count: int, arch: Architecture) -> Path:
    """``count`` submission folders with random-weight checkpoints of ``arch``."""
    config = {
        "model_config": {
            "n_embd": arch.n_embd,
            "n_head": arch.n_head,
            "n_positions": arch.n_positions,
            "n_layer": arch.n_layer,
        }
    }
    for i in range(count):
        torch.manual_seed(i)
        folder = root / f"submission_{i:04d}"
        folder.mkdir(parents=True)
        torch.save(build_model(arch, "pre_ln").state_dict(), folder / "model.pt")
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return root


def write_tokens(path: Path, n_tokens: int) -> Path:
    source = WIKITEXT_TEST if WIKITEXT_TEST.is_file() else SLICE
    ids = np.load(source)["tokens"]
    reps = math.ceil(n_tokens / len(ids))
    np.savez(path, test=np.tile(ids, reps)[:n_tokens])
    return path


def naive_perplexities(export: Path, tokens_path: Path, device: str) -> list[float]:
    """The tutorial-style loop (see the module docstring)."""
    out = []
    for folder in sorted(p for p in export.iterdir() if p.is_dir()):
        config = yaml.safe_load((folder / "config.yaml").read_text())["model_config"]
        state = torch.load(folder / "model.pt", weights_only=True)
        model = decoder_class("pre_ln")(state["token_embeddings.weight"].shape[0], **config)
        model.load_state_dict(state)
        model.to(device).eval()
        ids = torch.tensor(np.load(tokens_path)["test"].astype(np.int64))
        window = config["n_positions"]
        chunks = [ids[i : i + window] for i in range(0, len(ids) - 1, window)]
        losses = []
        with torch.no_grad():
            for b in range(0, len(chunks), NAIVE_BATCH):
                batch = chunks[b : b + NAIVE_BATCH]
                inputs = torch.zeros(len(batch), window, dtype=torch.long)
                mask = torch.zeros(len(batch), window)
                for row, chunk in enumerate(batch):
                    inputs[row, : len(chunk)], mask[row, : len(chunk)] = chunk, 1.0
                inputs, mask = inputs.to(device), mask.to(device)
                logits = model(inputs, attention_mask=mask)
                labels = inputs.masked_fill(mask == 0, -100)
                loss = F.cross_entropy(
                    logits[:, :-1].reshape(-1, logits.shape[-1]),
                    labels[:, 1:].reshape(-1),
                    ignore_index=-100,
                )
                losses.append(loss.item())
        out.append(math.exp(sum(losses) / len(losses)))
    return out


def time_checker(
    export: Path, tokens_path: Path, device: str, threads: int | None, dtype: str = "fp32"
) -> tuple[float, list[float], list]:
    settings = CheckSettings(test_tokens=tokens_path, device=device, variant="pre_ln", threads=threads, dtype=dtype)
    subs = read_submissions(export)
    start = time.perf_counter()
    rows, _ = run_check(subs, settings)
    seconds = time.perf_counter() - start
    return seconds, [r.perplexity for r in rows], rows


def time_naive(export: Path, tokens_path: Path, device: str) -> tuple[float, list[float]]:
    start = time.perf_counter()
    ppls = naive_perplexities(export, tokens_path, device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, ppls


def matmul_peak(device: str, n: int, repeats: int = PEAK_REPEATS, dtype: torch.dtype = torch.float32) -> float:
    """Best FLOP/s of ``torch.matmul`` on two n x n matrices (2 n^3 FLOPs), after a warm-up."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.matmul(a, b)
    _sync(device)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def forward_flops_per_token(arch: Architecture, n_params: int) -> int:
    """The forward pass's FLOPs per token: weights' multiply-adds plus attention scores."""
    return 2 * n_params + 4 * arch.n_layer * arch.n_embd * arch.n_positions


def compare(
    device: str,
    count: int,
    n_tokens: int,
    rounds: int,
    threads: int | None,
    peak: float | None = None,
) -> float:
    """Alternating rounds of naive and checker on the same files; returns the speedup."""
    with tempfile.TemporaryDirectory() as tmp:
        export = make_export(Path(tmp) / "export", count, GPT_TINY)
        tokens = write_tokens(Path(tmp) / "test.npz", n_tokens)
        if threads:
            torch.set_num_threads(threads)
        time_checker(export, tokens, device, threads)  # warm-up: imports, allocator, kernels
        naive_s, checker_s = [], []
        for _ in range(rounds):
            seconds, naive_ppl = time_naive(export, tokens, device)
            naive_s.append(seconds)
            seconds, checker_ppl, rows = time_checker(export, tokens, device, threads)
            checker_s.append(seconds)
        work = count * n_tokens
        naive_best, checker_best = min(naive_s), min(checker_s)
        print(
            f"[{device}] {count} GPT-tiny checkpoints (V=50257) x {n_tokens} tokens, "
            f"{rounds} alternating rounds; naive: 1 process, {torch.get_num_threads()} torch threads; "
            f"checker: {rows[0].device} workers as run_check chooses them"
        )
        print(
            f"  naive loop : best {naive_best:7.2f} s  median {statistics.median(naive_s):7.2f} s  "
            f"{work / naive_best:9.0f} tok/s   ppl[0] {naive_ppl[0]:.2f} (HF protocol: chunk-first "
            "tokens unscored, mean of batch means)"
        )
        print(
            f"  checker    : best {checker_best:7.2f} s  median {statistics.median(checker_s):7.2f} s  "
            f"{work / checker_best:9.0f} tok/s   ppl[0] {checker_ppl[0]:.2f} ({rows[0].tokens_scored} "
            f"tokens scored, path {rows[0].scoring_path})"
        )
        print(
            f"  speedup    : {naive_best / checker_best:.2f}x best-of-{rounds}, "
            f"{statistics.median(naive_s) / statistics.median(checker_s):.2f}x median"
        )
        if peak:
            flops = forward_flops_per_token(GPT_TINY, rows[0].n_params) * sum(r.tokens_scored for r in rows)
            ACHIEVED[f"[{device}] checker end to end (loading included)"] = flops / checker_best
        return naive_best / checker_best


def precision() -> None:
    """fp32 and bf16 perplexity of the trained fixture against a float64 computation."""
    from safetensors.torch import load_file

    state = load_file(str(ROOT / "fixtures" / "checkpoints" / "gpt_tiny_synthetic_pre_ln.safetensors"))
    ids = torch.from_numpy(np.load(ROOT / "fixtures" / "checkpoints" / "synthetic_test.npz")["test"].astype(np.int64))
    arch = Architecture(512, 32, 2, 128, 2)
    model = build_model(arch, "pre_ln")
    model.load_state_dict(state)
    plan = plan_windows(len(ids), arch.n_positions)
    exact = _float64_nll(model, ids, plan)
    line = []
    for bf16 in (False, True):
        options = ScoringOptions(device=torch.device("cpu"), bf16=bf16)
        scorer, _ = choose_scorer(model, ids, plan, options, arch.n_vocab)
        got = score_stream(scorer, ids, plan, options)
        rel = abs(math.exp(got.mean_nll) / math.exp(exact / got.n_scored) - 1)
        line.append(f"{'bf16' if bf16 else 'fp32'} {got.perplexity:.6f} (rel. error {rel:.1e})")
    print(
        f"[cpu] trained GPT-tiny fixture on the synthetic test file ({plan.total_scored} tokens): "
        f"float64 {math.exp(exact / plan.total_scored):.6f}; " + "; ".join(line)
    )


def _float64_nll(model: torch.nn.Module, ids: torch.Tensor, plan) -> float:
    model64 = build_model(
        Architecture(model.n_vocab, model.n_embd, model.n_head, model.n_positions, model.n_layer),
        "pre_ln",
    ).double()
    model64.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    total = 0.0
    offsets = torch.arange(plan.length)
    with torch.inference_mode():
        for start, scored in zip(plan.starts.tolist(), plan.n_scored.tolist()):
            window = ids[start + offsets]
            logp = torch.log_softmax(model64(window[None])[0], dim=-1)  # float64 throughout
            targets = ids[start + 1 + offsets]
            total -= float(logp[-scored:].gather(-1, targets[-scored:, None]).sum())
    return total


def checkpoints_per_minute(device: str, count: int, n_tokens: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        export = make_export(Path(tmp) / "export", count, GPT_TINY)
        tokens = write_tokens(Path(tmp) / "test.npz", n_tokens)
        for dtype in ("fp32", "bf16"):
            seconds, _, _ = time_checker(export, tokens, device, None, dtype)
            print(
                f"[{device}] {count} GPT-tiny checkpoints x {n_tokens} tokens, {dtype}: {seconds:.1f} s "
                f"= {60 * count / seconds:.0f} checkpoints/min"
            )


def forward_utilisation(
    device: str,
    arch: Architecture,
    batch: int,
    steps: int,
    label: str = "GPT-2-small-sized",
    bf16: bool = True,
    peak: float | None = None,
) -> None:
    """Forward-pass FLOP/s of the checker's scoring path (bf16, or fp32 against ``peak``)."""
    model = build_model(arch, "pre_ln").to(device)
    n_tokens = batch * arch.n_positions * steps + 1
    ids = torch.randint(0, arch.n_vocab, (n_tokens,), device=device)
    plan = plan_windows(n_tokens, arch.n_positions)
    options = ScoringOptions(device=torch.device(device), bf16=bf16, batch_windows=batch)
    scorer, _ = choose_scorer(model, ids, plan, options, arch.n_vocab)
    score_stream(
        scorer,
        ids[: batch * arch.n_positions + 1],
        plan_windows(batch * arch.n_positions + 1, arch.n_positions),
        options,
    )  # warm-up
    _sync(device)
    start = time.perf_counter()
    score_stream(scorer, ids, plan, options)
    _sync(device)
    seconds = time.perf_counter() - start
    n_params = sum(p.numel() for p in model.parameters())
    # forward = 1/3 of the course's training count: 2N + 4 * n_layer * n_embd * n_positions
    flops = forward_flops_per_token(arch, n_params) * (n_tokens - 1)
    achieved = flops / seconds
    if bf16:
        peak = _peak(device)
        share = f"{achieved / peak:.1%} of the {peak / 1e12:.0f} TFLOPS bf16 dense peak" if peak else "peak unknown"
    else:
        ACHIEVED[f"[{device}] scoring alone ({label}, one model)"] = achieved
        share = f"{achieved / peak:.1%} of the fp32 matmul peak measured at the start" if peak else "peak unknown"
    print(
        f"[{device}] {label} forward ({n_params / 1e6:.1f}M params, {'bf16' if bf16 else 'fp32'}, "
        f"path {scorer.name}, {torch.get_num_threads()} threads, one model): {(n_tokens - 1) / seconds:,.0f} tok/s, "
        f"{achieved / 1e9:.1f} GFLOP/s, {share}"
    )


def _peak(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name(torch.device(device))
    for key in sorted(BF16_PEAK, key=len, reverse=True):
        if all(part in name for part in key.split()):
            return BF16_PEAK[key]
    return None


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: a few minutes on a 2-core CPU")
    parser.add_argument("--device", default="auto", help="auto (CPU, plus CUDA when present), cpu or cuda")
    parser.add_argument("--threads", type=int, help="torch CPU threads (same for both sides)")
    parser.add_argument(
        "--gpu-sections-on-cpu",
        action="store_true",
        help="run the GPU-only sections on the CPU at toy sizes (checks the code path)",
    )
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, python {platform.python_version()}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads; cuda: "
        f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}"
    )
    count, tokens, rounds = (4, 8192, 3) if args.quick else (8, 32768, 2)
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu_threads = torch.get_num_threads()
    peak_n = 1024 if args.quick else 2048
    cpu_peak = matmul_peak("cpu", peak_n)
    print(
        f"[cpu] fp32 matmul peak: {cpu_peak / 1e9:.1f} GFLOP/s "
        f"(best of {PEAK_REPEATS}, {peak_n}x{peak_n}, {cpu_threads} threads)"
    )
    precision()
    speedups = {"cpu": compare("cpu", count, tokens, rounds, args.threads, peak=cpu_peak)}
    # the checker's workers may have changed the thread count: the same threads as the peak
    torch.set_num_threads(cpu_threads)
    forward_utilisation(
        "cpu",
        GPT_TINY,
        batch=16,
        steps=2 if args.quick else 8,
        label="GPT-tiny (V=50257)",
        bf16=False,
        peak=cpu_peak,
    )
    use_cuda = args.device in ("auto", "cuda") and torch.cuda.is_available()
    if use_cuda:
        speedups["cuda"] = compare("cuda", count * 4, tokens * 4, rounds, None)
        checkpoints_per_minute("cuda", 100, 65536 if args.quick else 262144)
        forward_utilisation("cuda", GPT2_SMALL, batch=16, steps=4 if args.quick else 16)
    elif args.gpu_sections_on_cpu:
        checkpoints_per_minute("cpu", 4, 2048)
        forward_utilisation(
            "cpu",
            Architecture(50257, 64, 2, 128, 2),
            batch=4,
            steps=2,
            label="toy (code-path check)",
        )
    torch.set_num_threads(cpu_threads)
    end_peak = matmul_peak("cpu", peak_n)
    peak = max(cpu_peak, end_peak)  # a burst of load during one measurement only lowers it
    print(
        f"[cpu] fp32 matmul peak: {cpu_peak / 1e9:.1f} GFLOP/s at the start, "
        f"{end_peak / 1e9:.1f} at the end; the fractions below use {peak / 1e9:.1f}"
    )
    if abs(cpu_peak - end_peak) > 0.15 * peak:
        print("  WARNING: the two peaks differ by more than 15%: the machine was loaded; rerun idle")
    for what, achieved in ACHIEVED.items():
        print(f"{what}: {achieved / 1e9:.1f} GFLOP/s = {achieved / peak:.1%} of the fp32 matmul peak")
    for device, value in speedups.items():
        print(f"speedup of the checker over the naive loop [{device}]: {value:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
