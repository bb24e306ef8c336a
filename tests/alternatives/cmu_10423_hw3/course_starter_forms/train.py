"""LoRA fine-tuning of GPT-2 on Rotten Tomatoes, in the course starter's form: argparse flags
(--lora_rank, --lora_alpha, ...), wandb credentials in wandb_api.json, and the model built
inline in main() (no init_model).

    python train.py --init_from=gpt2-medium --out_dir=lora-gpt-default
"""

import argparse
import json
import os
from contextlib import nullcontext

import torch
import wandb
from dataloader import CustomDataLoader
from datasets import load_dataset
from lora import mark_only_lora_as_trainable
from model import GPT, GPTConfig
from transformers import AutoTokenizer


def get_args():
    parser = argparse.ArgumentParser(description="LoRA fine-tuning of GPT-2")
    parser.add_argument("--out_dir", type=str, default="lora-gpt-default")
    parser.add_argument("--init_from", type=str, default="gpt2")
    parser.add_argument("--wandb_project", type=str, default="hw3-lora-finetune")
    parser.add_argument("--lora_rank", type=int, default=128)
    parser.add_argument("--lora_alpha", type=int, default=512)
    parser.add_argument("--lora_dropout", type=float, default=0.05)
    parser.add_argument("--dataset", type=str, default="rotten_tomatoes")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--gradient_accumulation_steps", type=int, default=32)
    parser.add_argument("--block_size", type=int, default=1024)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--learning_rate", type=float, default=2.5e-4)
    parser.add_argument("--max_iters", type=int, default=80)
    parser.add_argument("--eval_interval", type=int, default=5)
    parser.add_argument("--eval_iters", type=int, default=20)
    parser.add_argument("--weight_decay", type=float, default=1e-1)
    parser.add_argument("--grad_clip", type=float, default=1.0)
    parser.add_argument("--device", type=str, default="cuda")
    parser.add_argument("--dtype", type=str, default="bfloat16", choices=["float32", "bfloat16", "float16"])
    return parser.parse_args()


@torch.no_grad()
def estimate_loss(model, batches, eval_iters, ctx, device):
    model.eval()  # merges the LoRA updates
    losses = []
    for _ in range(eval_iters):
        x, y = next(batches)
        with ctx:
            losses.append(model(x.to(device), y.to(device))[1].item())
    model.train()  # un-merges them again
    return sum(losses) / len(losses)


def forever(loader):
    while True:
        yield from loader


def main():
    args = get_args()
    with open("wandb_api.json") as f:
        wandb.login(key=json.load(f)["wandb_api_key"])
    wandb.init(project=args.wandb_project, config=vars(args))
    os.makedirs(args.out_dir, exist_ok=True)
    torch.manual_seed(1337)
    device_type = "cuda" if "cuda" in args.device else "cpu"
    ptdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    ctx = nullcontext() if device_type == "cpu" else torch.autocast(device_type=device_type, dtype=ptdtype)

    tokenizer = AutoTokenizer.from_pretrained("openai-community/gpt2")
    tokenizer.pad_token = tokenizer.eos_token
    train_batches = forever(CustomDataLoader(load_dataset(args.dataset, split="train"), tokenizer,
                                             args.batch_size).get_loader())
    val_batches = forever(CustomDataLoader(load_dataset(args.dataset, split="validation"), tokenizer,
                                           args.batch_size).get_loader())

    if args.init_from == "resume":
        checkpoint = torch.load(os.path.join(args.out_dir, "ckpt.pt"), map_location="cpu")
        model = GPT(GPTConfig(**checkpoint["model_args"]))
        model.load_state_dict(checkpoint["model"])
    else:
        override_args = {"dropout": args.dropout}
        if args.lora_rank > 0:
            override_args.update(lora_rank=args.lora_rank, lora_alpha=args.lora_alpha,
                                 lora_dropout=args.lora_dropout)
        model = GPT.from_pretrained(args.init_from, override_args)
        if args.lora_rank > 0:
            model = mark_only_lora_as_trainable(model)
    if args.block_size < model.config.block_size:
        model.crop_block_size(args.block_size)
    model_args = vars(model.config).copy()

    model.to(args.device)
    optimizer = model.configure_optimizers(args.weight_decay, args.learning_rate, (0.9, 0.95), device_type)
    best_val_loss = float("inf")
    for it in range(args.max_iters + 1):
        if it % args.eval_interval == 0 or it == args.max_iters:
            val_loss = estimate_loss(model, val_batches, args.eval_iters, ctx, args.device)
            wandb.log({"iter": it, "val/loss": val_loss})
            checkpoint = {"model": model.state_dict(), "model_args": model_args, "iter_num": it,
                          "best_val_loss": min(best_val_loss, val_loss)}
            if val_loss < best_val_loss:
                best_val_loss = val_loss
                torch.save(checkpoint, os.path.join(args.out_dir, "ckpt.pt"))
            if it == args.max_iters:
                torch.save(checkpoint, os.path.join(args.out_dir, "ckpt_last.pt"))
                break
        for _ in range(args.gradient_accumulation_steps):
            x, y = next(train_batches)
            with ctx:
                loss = model(x.to(args.device), y.to(args.device))[1] / args.gradient_accumulation_steps
            loss.backward()
        if args.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        wandb.log({"iter": it, "train/loss": loss.item() * args.gradient_accumulation_steps})


if __name__ == "__main__":
    main()
