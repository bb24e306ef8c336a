"""IFT6135 A2, Problem 3: train the LSTM or MiniGPT1 on Wikitext-2 and log the curves.

The 12 configurations of the handout (all with --batch_size 16 --log --epochs 10):

1. python run_exp.py --model lstm --layers 1 --batch_size 16 --log --epochs 10 --optimizer adam
2. python run_exp.py --model lstm --layers 1 --batch_size 16 --log --epochs 10 --optimizer adamw
3. python run_exp.py --model lstm --layers 1 --batch_size 16 --log --epochs 10 --optimizer sgd
4. python run_exp.py --model lstm --layers 1 --batch_size 16 --log --epochs 10 --optimizer momentum

5. python run_exp.py --model gpt1 --layers 1 --batch_size 16 --log --epochs 10 --optimizer adam
6. python run_exp.py --model gpt1 --layers 1 --batch_size 16 --log --epochs 10 --optimizer adamw
7. python run_exp.py --model gpt1 --layers 1 --batch_size 16 --log --epochs 10 --optimizer sgd
8. python run_exp.py --model gpt1 --layers 1 --batch_size 16 --log --epochs 10 --optimizer momentum

9. python run_exp.py --model lstm --layers 2 --batch_size 16 --log --epochs 10 --optimizer adamw
10. python run_exp.py --model lstm --layers 4 --batch_size 16 --log --epochs 10 --optimizer adamw
11. python run_exp.py --model gpt1 --layers 2 --batch_size 16 --log --epochs 10 --optimizer adamw
12. python run_exp.py --model gpt1 --layers 4 --batch_size 16 --log --epochs 10 --optimizer adamw

`--config N` starts from configuration N (explicit flags still override it).

The pretrained GPT-1 embeddings (`--embeddings`, an `embeddings.npz` with arrays `tokens`
and `position`) come from the course page; this script never downloads anything. Without
the file (or with --random_embeddings) it trains small randomly initialised, learnable
embeddings of size --embedding_size instead. For a quick CPU run, e.g.:

    python run_exp.py --config 6 --random_embeddings --embedding_size 48 --num_heads 4 \
        --max_length 64 --batch_size 4 --max_steps 5 --max_eval_steps 2 --epochs 2 --device cpu
"""
import argparse
import math
import os
import time
import warnings

import torch
from gpt1_solution import MiniGPT1
from lstm_solution import LSTM
from torch import optim
from torch.utils.data import DataLoader
from tqdm import tqdm
from utils.data_utils import save_logs
from utils.torch_utils import seed_experiment, to_device
from utils.wikitext2 import Wikitext2

CONFIGS = {
    1: {"model": "lstm", "layers": 1, "optimizer": "adam"},
    2: {"model": "lstm", "layers": 1, "optimizer": "adamw"},
    3: {"model": "lstm", "layers": 1, "optimizer": "sgd"},
    4: {"model": "lstm", "layers": 1, "optimizer": "momentum"},
    5: {"model": "gpt1", "layers": 1, "optimizer": "adam"},
    6: {"model": "gpt1", "layers": 1, "optimizer": "adamw"},
    7: {"model": "gpt1", "layers": 1, "optimizer": "sgd"},
    8: {"model": "gpt1", "layers": 1, "optimizer": "momentum"},
    9: {"model": "lstm", "layers": 2, "optimizer": "adamw"},
    10: {"model": "lstm", "layers": 4, "optimizer": "adamw"},
    11: {"model": "gpt1", "layers": 2, "optimizer": "adamw"},
    12: {"model": "gpt1", "layers": 4, "optimizer": "adamw"},
}
CONFIG_DEFAULTS = {"batch_size": 16, "log": True, "epochs": 10}

VOCABULARY_SIZE = 40479  # GPT-1's 40,478 BPE tokens + the padding id 0


def log_probas_of(model, batch):
    if isinstance(model, LSTM):
        hidden_states = model.initial_states(batch["source"].shape[0])
        log_probas, _ = model(batch["source"], hidden_states)
        return log_probas
    return model(batch["source"])


def summed_token_nll(log_probas, targets, mask):
    """Sum of the NLL over the real tokens of a batch.

    Perplexity is exp(mean NLL per token over the whole split), so batches are combined by
    token counts; model.loss (a mean of per-sequence means) cannot be combined exactly.
    """
    target_log_probas = log_probas.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, S)
    return -(target_log_probas * mask).sum().item()


def train(epoch, model, dataloader, optimizer, args):
    model.train()
    nll, tokens = 0.0, 0.0
    start_time = time.time()
    batches = tqdm(dataloader, desc=f"Epoch {epoch}", disable=not args.progress_bar)
    for step, batch in enumerate(batches):
        if args.max_steps is not None and step >= args.max_steps:
            break
        batch = to_device(batch, args.device)
        optimizer.zero_grad()
        log_probas = log_probas_of(model, batch)
        loss = model.loss(log_probas, batch["target"], batch["mask"])
        loss.backward()
        optimizer.step()

        nll += summed_token_nll(log_probas.detach(), batch["target"], batch["mask"])
        tokens += batch["mask"].sum().item()
        if step % args.print_every == 0:
            tqdm.write(f"[TRAIN] Epoch: {epoch}, Iter: {step}, Loss: {loss.item():.5f}")

    mean_loss = nll / tokens
    perplexity = math.exp(mean_loss)
    tqdm.write(f"== [TRAIN] Epoch: {epoch}, Perplexity: {perplexity:.3f} ==>")
    return mean_loss, perplexity, time.time() - start_time


@torch.no_grad()
def evaluate(epoch, model, dataloader, args, mode="val"):
    model.eval()
    nll, tokens = 0.0, 0.0
    start_time = time.time()
    batches = tqdm(dataloader, desc="Evaluation", disable=not args.progress_bar)
    for step, batch in enumerate(batches):
        if args.max_eval_steps is not None and step >= args.max_eval_steps:
            break
        batch = to_device(batch, args.device)
        log_probas = log_probas_of(model, batch)
        nll += summed_token_nll(log_probas, batch["target"], batch["mask"])
        tokens += batch["mask"].sum().item()

    mean_loss = nll / tokens
    perplexity = math.exp(mean_loss)
    tqdm.write(f"=== [{mode.upper()}] Epoch: {epoch}, Perplexity: {perplexity:.3f} ===>")
    return mean_loss, perplexity, time.time() - start_time


def build_model(args):
    """The model of --model, on the pretrained embeddings if available, else random ones."""
    if not args.random_embeddings and os.path.isfile(args.embeddings):
        if args.model == "lstm":
            return LSTM.load_embeddings_from(
                args.embeddings, hidden_size=args.hidden_size, num_layers=args.layers
            )
        return MiniGPT1.load_embeddings_from(
            args.embeddings, num_heads=args.num_heads, num_layers=args.layers
        )
    if not args.random_embeddings:
        warnings.warn(
            f"No embeddings file at {args.embeddings}: training random, learnable embeddings "
            f"of size {args.embedding_size} instead of the pretrained GPT-1 ones."
        )
    # GPT-style small init; a N(0, 1) table tied to the classifier gives huge first logits.
    tokens_weight = 0.02 * torch.randn(VOCABULARY_SIZE, args.embedding_size)
    tokens_weight[0] = 0.0  # padding
    if args.model == "lstm":
        return LSTM(
            VOCABULARY_SIZE, args.embedding_size, args.hidden_size, args.layers,
            learn_embeddings=True, _embedding_weight=tokens_weight,
        )
    positional_weight = 0.02 * torch.randn(args.max_length, args.embedding_size)
    return MiniGPT1(
        VOCABULARY_SIZE, args.embedding_size, args.max_length, args.num_heads, args.layers,
        learn_embeddings=True,
        _tokens_embedding_weight=tokens_weight,
        _positional_embedding_weight=positional_weight,
    )


def build_optimizer(model, args):
    parameters = [p for p in model.parameters() if p.requires_grad]
    if args.optimizer == "adamw":
        return optim.AdamW(parameters, lr=args.lr, weight_decay=args.weight_decay)
    if args.optimizer == "adam":
        return optim.Adam(parameters, lr=args.lr)
    if args.optimizer == "sgd":
        return optim.SGD(parameters, lr=args.lr, weight_decay=args.weight_decay)
    if args.optimizer == "momentum":
        return optim.SGD(
            parameters, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay
        )
    raise ValueError(f"Unknown optimizer {args.optimizer}")


def main(args):
    """Train and evaluate one configuration; returns the nine lists/numbers of save_logs."""
    seed_experiment(args.seed)

    def loader(split, shuffle):
        dataset = Wikitext2(args.data_folder, split=split, max_length=args.max_length)
        return DataLoader(
            dataset, batch_size=args.batch_size, shuffle=shuffle, num_workers=args.num_workers
        )

    train_dataloader = loader("train", shuffle=True)
    valid_dataloader = loader("validation", shuffle=False)
    test_dataloader = loader("test", shuffle=False)

    model = build_model(args).to(args.device)
    optimizer = build_optimizer(model, args)
    num_parameters = sum(p.numel() for p in model.parameters())
    num_learnable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(
        f"Initialized {args.model.upper()} model with {num_parameters} total parameters, "
        f"of which {num_learnable} are learnable."
    )

    train_losses, valid_losses = [], []
    train_ppls, valid_ppls = [], []
    train_times, valid_times = [], []
    for epoch in range(args.epochs):
        tqdm.write(f"====== Epoch {epoch} ======>")
        loss, ppl, wall_time = train(epoch, model, train_dataloader, optimizer, args)
        train_losses.append(loss)
        train_ppls.append(ppl)
        train_times.append(wall_time)

        loss, ppl, wall_time = evaluate(epoch, model, valid_dataloader, args)
        valid_losses.append(loss)
        valid_ppls.append(ppl)
        valid_times.append(wall_time)

    test_loss, test_ppl, test_time = evaluate(epoch, model, test_dataloader, args, mode="test")
    print(f"===== Best validation perplexity: {min(valid_ppls):.3f} =====>")
    return (
        train_losses, train_ppls, train_times,
        valid_losses, valid_ppls, valid_times,
        test_loss, test_ppl, test_time,
    )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Run an experiment for assignment 2.")

    data = parser.add_argument_group("Data")
    data.add_argument("--data_folder", type=str, default="./data",
                      help="folder with wiki.{train,validation,test}.npz (default: %(default)s).")
    data.add_argument("--batch_size", type=int, default=2,
                      help="batch size (default: %(default)s).")
    data.add_argument("--max_length", type=int, default=256,
                      help="sequence length of the examples (default: %(default)s).")

    model = parser.add_argument_group("Model")
    model.add_argument("--model", type=str, choices=["lstm", "gpt1"], default="lstm",
                       help="name of the model to run (default: %(default)s).")
    model.add_argument("--embeddings", type=str, default="./data/embeddings.npz",
                       help="pretrained GPT-1 embeddings (default: %(default)s); "
                            "random ones are used when the file is missing.")
    model.add_argument("--random_embeddings", action="store_true",
                       help="train random, learnable embeddings even if --embeddings exists.")
    model.add_argument("--embedding_size", type=int, default=768,
                       help="embedding size with random embeddings (default: %(default)s).")
    model.add_argument("--hidden_size", type=int, default=512,
                       help="LSTM hidden size (default: %(default)s).")
    model.add_argument("--num_heads", type=int, default=12,
                       help="GPT attention heads (default: %(default)s).")
    model.add_argument("--layers", type=int, default=1,
                       help="number of layers in the model (default: %(default)s).")

    optimization = parser.add_argument_group("Optimization")
    optimization.add_argument("--epochs", type=int, default=3,
                              help="number of epochs for training (default: %(default)s).")
    optimization.add_argument("--optimizer", type=str, default="adamw",
                              choices=["sgd", "momentum", "adam", "adamw"],
                              help="choice of optimizer (default: %(default)s).")
    optimization.add_argument("--lr", type=float, default=1e-3,
                              help="learning rate (default: %(default)s).")
    optimization.add_argument("--momentum", type=float, default=0.9,
                              help="momentum for SGD optimizer (default: %(default)s).")
    optimization.add_argument("--weight_decay", type=float, default=5e-4,
                              help="weight decay (default: %(default)s).")
    optimization.add_argument("--max_steps", type=int, default=None,
                              help="at most this many training batches per epoch (default: all).")
    optimization.add_argument("--max_eval_steps", type=int, default=None,
                              help="at most this many batches per evaluation (default: all).")

    exp = parser.add_argument_group("Experiment config")
    exp.add_argument("--exp_id", type=str, default="debug",
                     help="unique experiment identifier (default: %(default)s).")
    exp.add_argument("--log", action="store_true",
                     help="whether or not to log data from the experiment.")
    exp.add_argument("--log_dir", type=str, default="logs",
                     help="directory to log results to (default: %(default)s).")
    exp.add_argument("--seed", type=int, default=42,
                     help="random seed for repeatability (default: %(default)s).")

    misc = parser.add_argument_group("Miscellaneous")
    misc.add_argument("--num_workers", type=int, default=2,
                      help="number of processes to use for data loading (default: %(default)s).")
    misc.add_argument("--device", type=str, choices=["cpu", "cuda"], default="cuda",
                      help="device to store tensors on (default: %(default)s).")
    misc.add_argument("--progress_bar", action="store_true", help="show tqdm progress bar.")
    misc.add_argument("--print_every", type=int, default=10,
                      help="number of minibatches after which to print loss (default: %(default)s).")

    exp.add_argument("--config", type=int, choices=sorted(CONFIGS), default=None,
                     help="start from one of the handout's 12 configurations (model, layers, "
                          "optimizer, --batch_size 16 --log --epochs 10); other flags override it.")

    config = parser.parse_known_args(argv)[0].config
    if config is not None:
        parser.set_defaults(**CONFIG_DEFAULTS, **CONFIGS[config], exp_id=f"config_{config}")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        warnings.warn('CUDA is not available: forcing device="cpu".')
        args.device = "cpu"
    return args


if __name__ == "__main__":
    args = parse_args()
    logs = main(args)
    if args.log:
        print(f"Logs written to {save_logs(args, *logs)}")
