"""Experiment logs (provided).

`save_logs` writes, under `log_dir/exp_id/`, the course's files: `args.json` and one text
file per metric (`train_ppl.txt`, ...: one value per line, one line per epoch), plus
`logs.json` holding the same numbers in one JSON object (what the plotting tool reads).
"""
import json
import os

# save_logs argument -> the course's file name.
METRIC_FILES = {
    "train_losses": "train_loss.txt",
    "train_ppls": "train_ppl.txt",
    "train_times": "train_time.txt",
    "valid_losses": "valid_loss.txt",
    "valid_ppls": "valid_ppl.txt",
    "valid_times": "valid_time.txt",
    "test_loss": "test_loss.txt",
    "test_ppl": "test_ppl.txt",
    "test_time": "test_time.txt",
}


def save_logs(
    args,
    train_losses,
    train_ppls,
    train_times,
    valid_losses,
    valid_ppls,
    valid_times,
    test_loss,
    test_ppl,
    test_time,
):
    """Save the per-epoch losses, perplexities and wall-clock times of a run.

    `*_times` are the seconds each epoch's training (or validation) took; `test_*` are
    single numbers. Returns the folder written to.
    """
    values = (
        train_losses, train_ppls, train_times,
        valid_losses, valid_ppls, valid_times,
        test_loss, test_ppl, test_time,
    )
    logs = {name: _to_python(value) for name, value in zip(METRIC_FILES, values)}

    folder = os.path.join(args.log_dir, args.exp_id)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "args.json"), "w") as f:
        json.dump(vars(args), f, indent=2, default=str)
    for name, file_name in METRIC_FILES.items():
        value = logs[name]
        lines = value if isinstance(value, list) else [value]
        with open(os.path.join(folder, file_name), "w") as f:
            f.write("\n".join(repr(v) for v in lines) + "\n")
    with open(os.path.join(folder, "logs.json"), "w") as f:
        json.dump({"args": vars(args), **logs}, f, indent=2, default=str)
    return folder


def _to_python(value):
    if isinstance(value, (list, tuple)):
        return [float(v) for v in value]
    return float(value)
