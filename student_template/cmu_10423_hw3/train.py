"""LoRA fine-tuning of GPT-2 on Rotten Tomatoes (HW3 section 2, "Training").

    python train.py configs/finetune_params_config.py --init_from=gpt2-medium --out_dir=gpt-lora-default

Settings come from configs/finetune_params_config.py and the command line (configurator.py).
The best checkpoint by validation loss is saved as <out_dir>/ckpt.pt, the last as ckpt_last.pt.
"""

import logging
import math
import os
import sys
import time
from contextlib import nullcontext

import torch
from configurator import load_config
from dataloader import CustomDataLoader, load_split, load_tokenizer
from lora import mark_only_lora_as_trainable
from model import GPT, GPTConfig

logger = logging.getLogger("train")
DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "finetune_params_config.py")


def init_model(config):
    """The GPT named by config["init_from"] with the LoRA settings of the config; returns
    (model, model_args), model_args being the GPTConfig fields a checkpoint stores."""
    init_from = config["init_from"]
    lora_args = {"lora_rank": config["rank"], "lora_alpha": config["alpha"],
                 "lora_dropout": config["lora_dropout"]}
    if init_from == "resume":
        checkpoint = torch.load(os.path.join(config["out_dir"], "ckpt.pt"), map_location="cpu")
        model = GPT(GPTConfig(**checkpoint["model_args"]))
        model.load_state_dict(checkpoint["model"])
        if model.config.lora_rank > 0:
            mark_only_lora_as_trainable(model)
    elif init_from == "scratch":
        model = GPT(GPTConfig(n_layer=config["n_layer"], n_head=config["n_head"], n_embd=config["n_embd"],
                              block_size=config["block_size"], vocab_size=config["vocab_size"],
                              dropout=config["dropout"], **lora_args))
    else:
        model = GPT.from_pretrained(init_from, dict(dropout=config["dropout"], **lora_args))
        # TODO: make the model LoRA-friendly: when LoRA is on (rank > 0), only A and B train
        raise NotImplementedError
    if model.config.block_size > config["block_size"]:
        model.crop_block_size(config["block_size"])
    return model, vars(model.config).copy()


def get_lr(it, config):
    """Linear warmup for warmup_iters steps, then cosine decay to min_lr at max_iters."""
    if not config["decay_lr"]:
        return config["lr"]
    if it < config["warmup_iters"]:
        return config["lr"] * (it + 1) / (config["warmup_iters"] + 1)
    if it > config["max_iters"]:
        return config["min_lr"]
    decay_ratio = (it - config["warmup_iters"]) / max(1, config["max_iters"] - config["warmup_iters"])
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))  # from 1 down to 0
    return config["min_lr"] + coeff * (config["lr"] - config["min_lr"])


@torch.no_grad()
def estimate_loss(model, loaders, eval_iters, device, ctx):
    """Mean loss over up to eval_iters batches of each loader (eval mode: LoRA merged)."""
    out = {}
    model.eval()
    for split, loader in loaders.items():
        losses = []
        for k, (x, y) in enumerate(loader):
            if k == eval_iters:
                break
            with ctx:
                _, loss = model(x.to(device), y.to(device))
            losses.append(loss.item())
        out[split] = sum(losses) / max(1, len(losses))
    model.train()  # un-merges LoRA again, so the saved state holds W0 and A, B apart
    return out


def batches(loader):
    """Batches forever, reshuffled every pass."""
    while True:
        yield from loader


def main(argv=None):
    config = load_config([DEFAULT_CONFIG] + (sys.argv[1:] if argv is None else list(argv)))
    torch.manual_seed(config["seed"])
    device = config["device"]
    device_type = "cuda" if "cuda" in device else "cpu"
    ptdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[config["dtype"]]
    ctx = nullcontext() if device_type == "cpu" else torch.autocast(device_type=device_type, dtype=ptdtype)

    tokenizer = load_tokenizer(config["tokenizer"])
    train_loader = CustomDataLoader(load_split(config["dataset"], "train"), tokenizer, config["batch_size"]).get_loader()
    val_loader = CustomDataLoader(load_split(config["dataset"], "validation"), tokenizer, config["batch_size"]).get_loader(shuffle=False)

    model, model_args = init_model(config)
    model.to(device)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_params = sum(p.numel() for p in model.parameters())
    optimizer = model.configure_optimizers(config["weight_decay"], config["lr"],
                                           (config["beta1"], config["beta2"]), device_type)
    scaler = torch.amp.GradScaler(device_type, enabled=(config["dtype"] == "float16"))
    if config["wandb_log"]:
        import wandb

        wandb.init(project=config["wandb_project"], name=config["wandb_run_name"], config=config)
    logger.info("trainable parameters: %s of %s (%.2f%%)", f"{n_trainable:,}", f"{n_params:,}", 100 * n_trainable / n_params)

    os.makedirs(config["out_dir"], exist_ok=True)
    train_batches = batches(train_loader)
    best_val_loss = float("inf")
    history = []
    model.train()
    for it in range(config["max_iters"] + 1):
        lr = get_lr(it, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if it % config["eval_interval"] == 0 or it == config["max_iters"]:
            losses = estimate_loss(model, {"train": train_loader, "val": val_loader},
                                   config["eval_iters"], device, ctx)
            history.append(dict(iter=it, **losses))
            logger.info("step %d: train loss %.4f, val loss %.4f", it, losses["train"], losses["val"])
            if config["wandb_log"]:
                wandb.log({"iter": it, "train/loss": losses["train"], "val/loss": losses["val"], "lr": lr})
            checkpoint = {"model": model.state_dict(), "model_args": model_args, "iter_num": it,
                          "val_loss": losses["val"], "config": config}
            if losses["val"] < best_val_loss or config["always_save_checkpoint"]:
                best_val_loss = min(best_val_loss, losses["val"])
                torch.save(checkpoint, os.path.join(config["out_dir"], "ckpt.pt"))
            if it == config["max_iters"]:
                torch.save(checkpoint, os.path.join(config["out_dir"], "ckpt_last.pt"))
                break
        t0 = time.time()
        for _ in range(config["gradient_accumulation_steps"]):
            x, y = next(train_batches)
            with ctx:
                _, loss = model(x.to(device), y.to(device))
                loss = loss / config["gradient_accumulation_steps"]  # the mean over micro-batches
            scaler.scale(loss).backward()
        if config["grad_clip"] != 0.0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), config["grad_clip"])
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        logger.info("iter %d: loss %.4f, %.0f ms", it, loss.item() * config["gradient_accumulation_steps"],
                    1000 * (time.time() - t0))
    return history


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
