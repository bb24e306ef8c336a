"""Learning curves for IFT6135 A2, Problem 3, question 1.

Reads the logs of one or more `run_exp.py` runs (a run folder `log_dir/exp_id/` with
`logs.json`, or the course's `args.json` + `*.txt` files, or a `logs.json` path) and writes
one PNG: train and validation perplexity over epochs, and over wall-clock time.

    python -m tools.mila_ift6135_a2.plot_curves logs/exp1 logs/exp5 --out curves.png

`run_demo(out_dir)` trains one small configuration for two short epochs on the fixture's
Wikitext-2 slice and plots it (used by `lmgrade demo`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from itertools import accumulate
from pathlib import Path

from grader import project_root

ROOT = project_root()
REFERENCE = ROOT / "reference" / "mila_ift6135_a2"
DATA = ROOT / "fixtures" / "mila_ift6135_a2" / "data"
PER_EPOCH = ("train_ppls", "valid_ppls", "train_times", "valid_times")
# The course's per-metric text files, for runs logged by the original save_logs.
TEXT_FILES = {
    "train_ppls": "train_ppl.txt",
    "valid_ppls": "valid_ppl.txt",
    "train_times": "train_time.txt",
    "valid_times": "valid_time.txt",
}

# A quick CPU version of configuration 2 (LSTM, 1 layer, AdamW) on random embeddings.
DEMO_ARGS = [
    "--config",
    "2",
    "--lr",
    "1e-2",
    "--random_embeddings",
    "--embedding_size",
    "32",
    "--hidden_size",
    "32",
    "--max_length",
    "32",
    "--batch_size",
    "4",
    "--epochs",
    "2",
    "--max_steps",
    "6",
    "--max_eval_steps",
    "2",
    "--device",
    "cpu",
    "--num_workers",
    "0",
    "--print_every",
    "1000",
]


def load_run(path) -> dict:
    """The per-epoch perplexities and times of one run, plus its label and args."""
    path = Path(path)
    if path.is_file():
        logs = json.loads(path.read_text(encoding="utf-8"))
        folder = path.parent
    elif (path / "logs.json").is_file():
        logs = json.loads((path / "logs.json").read_text(encoding="utf-8"))
        folder = path
    else:
        folder = path
        logs = {name: [float(v) for v in (path / file).read_text().split()] for name, file in TEXT_FILES.items()}
        args_file = path / "args.json"
        logs["args"] = json.loads(args_file.read_text()) if args_file.is_file() else {}
    missing = [name for name in PER_EPOCH if name not in logs]
    if missing:
        raise ValueError(f"{path}: no {', '.join(missing)} in the logs")
    logs.setdefault("args", {})
    logs["label"] = _label(logs["args"], folder.name)
    return logs


def _label(args: dict, fallback: str) -> str:
    if {"model", "layers", "optimizer"} <= args.keys():
        return f"{args['model'].upper()} {args['layers']}L {args['optimizer']}"
    return fallback


def plot_curves(runs, out, labels=None, title=None) -> Path:
    """Write the learning curves of `runs` (paths or loaded dicts) to the PNG `out`."""
    import matplotlib

    matplotlib.use("Agg")  # no display: CI and Gradescope
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    runs = [run if isinstance(run, dict) else load_run(run) for run in runs]
    labels = labels or [run["label"] for run in runs]
    fig, (by_epoch, by_time) = plt.subplots(1, 2, figsize=(11, 4.2))
    for index, (run, label) in enumerate(zip(runs, labels)):
        colour = f"C{index % 10}"
        epochs = list(range(1, len(run["train_ppls"]) + 1))
        # Wall-clock time at the end of each epoch: training and validation both count.
        elapsed = list(accumulate(t + v for t, v in zip(run["train_times"], run["valid_times"])))
        for axis, x in ((by_epoch, epochs), (by_time, elapsed)):
            axis.plot(x, run["train_ppls"], "-o", color=colour, label=f"{label} (train)")
            axis.plot(x, run["valid_ppls"], "--s", color=colour, label=f"{label} (valid)")
    by_epoch.set_xlabel("epoch")
    by_epoch.xaxis.set_major_locator(MaxNLocator(integer=True))
    by_time.set_xlabel("wall-clock time (s)")
    for axis in (by_epoch, by_time):
        axis.set_ylabel("perplexity")
        axis.set_yscale("log")  # early perplexities are orders of magnitude above late ones
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize="small")
    by_epoch.set_title("Perplexity over epochs")
    by_time.set_title("Perplexity over wall-clock time")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def run_demo(out_dir) -> Path:
    """Train a small configuration 2 for two short epochs on the fixture data; plot it."""
    out_dir = Path(out_dir).resolve()
    log_dir = out_dir / "logs"
    command = [
        sys.executable,
        "run_exp.py",
        *DEMO_ARGS,
        "--data_folder",
        str(DATA),
        "--log_dir",
        str(log_dir),
        "--exp_id",
        "demo_config2",
    ]
    # run_exp.py imports its neighbours by name (lstm_solution, utils): run it in its folder.
    result = subprocess.run(command, check=False, cwd=REFERENCE, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"run_exp.py failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return plot_curves(
        [log_dir / "demo_config2"],
        out_dir / "learning_curves.png",
        title="IFT6135 A2 demo: small LSTM, AdamW, Wikitext-2 slice",
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Plot IFT6135 A2 learning curves from run_exp.py logs.")
    parser.add_argument("runs", nargs="*", help="run folders (log_dir/exp_id) or logs.json files")
    parser.add_argument("--out", default="learning_curves.png", help="PNG to write (default: %(default)s)")
    parser.add_argument("--labels", nargs="*", help="one legend label per run")
    parser.add_argument("--title", default=None, help="figure title")
    parser.add_argument("--demo", metavar="DIR", help="run the CPU demo into DIR instead")
    args = parser.parse_args(argv)
    if args.demo:
        print(run_demo(args.demo))
        return 0
    if not args.runs:
        parser.error("give at least one run folder, or --demo DIR")
    if args.labels and len(args.labels) != len(args.runs):
        parser.error("--labels needs one label per run")
    print(plot_curves(args.runs, args.out, labels=args.labels, title=args.title))
    return 0


if __name__ == "__main__":
    sys.exit(main())
