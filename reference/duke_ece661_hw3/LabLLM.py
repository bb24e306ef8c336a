# %% [markdown]
# # ECE 661 HW3, Lab (2): GPT-2 with Hugging Face
#
# Generate text with a pre-trained GPT-2, prepare 10% of WikiText-2, measure perplexity,
# fine-tune GPT-2 fully and with LoRA, and compare the two. Fill in every `TODO`; the
# autograder imports the functions of this notebook, so keep their names and signatures.
#
# Put the raw WikiText-2 files (`wiki.train.raw`, `wiki.valid.raw`, `wiki.test.raw` from
# `wikitext-2-raw-v1`) in `./wikitext-2-raw/`.

# %%
"""ECE 661 HW3, Lab (2): GPT-2 generation, perplexity, full and LoRA fine-tuning (section 3)."""
import math
import time
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from torch.utils.data import DataLoader, Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

MODEL_NAME = "gpt2"
WIKITEXT_DIR = "./wikitext-2-raw"


# %%
def load_model_and_tokenizer(model_name: str = MODEL_NAME):
    """A causal LM and its tokenizer; GPT-2 has no padding token, so pad with end-of-text."""
    tokenizer = AutoTokenizer.from_pretrained(model_name)
    tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_name)
    return model, tokenizer


def count_trainable_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# %% [markdown]
# ## (a) Generate text with GPT-2
# Encode the prompt, call `model.generate()` (greedy decoding), and decode the output ids.

# %%
def generate_text(model, tokenizer, prompt: str, max_length: int = 100) -> str:
    """The prompt followed by the model's greedy continuation, as text (max_length tokens)."""
    # TODO: tokenize, generate, decode
    # BEGIN SOLUTION
    inputs = tokenizer(prompt, return_tensors="pt").to(model.device)
    output_ids = model.generate(**inputs, max_length=max_length, do_sample=False,
                                pad_token_id=tokenizer.eos_token_id)     # (1, <= max_length)
    return tokenizer.decode(output_ids[0], skip_special_tokens=True)
    # END SOLUTION


# %% [markdown]
# ## (b) Prepare the dataset
# Keep the first 10% of the non-empty lines of each split. Tokenize with padding to
# `max_length`; the labels are the input ids with padding positions set to -100, which the loss
# ignores.

# %%
SPLIT_FILES = {"train": "wiki.train.raw", "validation": "wiki.valid.raw", "test": "wiki.test.raw"}


def load_wikitext(data_dir: str = WIKITEXT_DIR, fraction: float = 0.1) -> dict:
    """{split: the first `fraction` of its non-empty lines} for train, validation and test."""
    splits = {}
    for split, file_name in SPLIT_FILES.items():
        lines = Path(data_dir, file_name).read_text(encoding="utf-8").splitlines()
        # TODO: drop the blank lines, keep the first `fraction` of the others
        # BEGIN SOLUTION
        lines = [line for line in lines if line.strip()]
        splits[split] = lines[:round(fraction * len(lines))]
        # END SOLUTION
    return splits


class TokenizedDataset(Dataset):
    """Rows of equal-length tensors: input_ids, attention_mask, labels (each (T,))."""

    def __init__(self, encodings: dict):
        self.encodings = encodings

    def __len__(self) -> int:
        return len(self.encodings["input_ids"])

    def __getitem__(self, idx: int) -> dict:
        return {key: values[idx] for key, values in self.encodings.items()}


def prepare_dataset(texts: list, tokenizer, max_length: int = 512) -> TokenizedDataset:
    """Tokenize to max_length (pad and truncate); labels = input ids, -100 at padding."""
    # TODO: tokenize `texts`, build the labels, return TokenizedDataset({...})
    # BEGIN SOLUTION
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length,
                    return_tensors="pt")                                  # (N, max_length)
    labels = enc["input_ids"].clone()
    # Mask by attention_mask, not by pad id: GPT-2's pad id is its (real) end-of-text id.
    labels[enc["attention_mask"] == 0] = -100
    return TokenizedDataset({"input_ids": enc["input_ids"],
                             "attention_mask": enc["attention_mask"], "labels": labels})
    # END SOLUTION


# %% [markdown]
# ## (c) Perplexity
# $PP = \exp\left(-\frac{1}{N}\sum_i \log P(w_i \mid w_{<i})\right)$ over every predicted token
# of the dataset: the logits at position $t$ predict token $t+1$, padding is not predicted, and
# the average is over tokens (not over batches or sequences).

# %%
@torch.no_grad()
def evaluate_perplexity(model, dataloader) -> float:
    """Token-weighted perplexity of `model` over batches with input_ids and attention_mask."""
    # TODO: sum the negative log-likelihood of every predicted (non-padding) token
    # BEGIN SOLUTION
    model.eval()  # dropout off: perplexity must be deterministic
    device = next(model.parameters()).device
    total_nll, total_tokens = 0.0, 0
    for batch in dataloader:
        input_ids = batch["input_ids"].to(device)                         # (B, T)
        attention_mask = batch["attention_mask"].to(device)               # (B, T)
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits  # (B, T, V)
        log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)    # (B, T-1, V)
        targets = input_ids[:, 1:]                                        # (B, T-1)
        nll = -log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)    # (B, T-1)
        predicted = attention_mask[:, 1:].bool()          # the first token is never predicted
        # where, not a product: a row of padding only (a blank line) must add nothing, even NaN
        total_nll += torch.where(predicted, nll, 0.0).sum().item()  # float64 accumulation
        total_tokens += int(predicted.sum().item())
    return math.exp(total_nll / total_tokens)
    # END SOLUTION


# %% [markdown]
# ## (d) Fine-tune GPT-2 with the Trainer
# Build `TrainingArguments` and a `Trainer` that evaluates and logs once per epoch, then read
# the per-epoch training and validation losses from the trainer's log.

# %%
def build_trainer(model, train_dataset, eval_dataset, output_dir: str = "./gpt2-wikitext",
                  num_train_epochs: int = 3, batch_size: int = 8, learning_rate: float = 5e-5,
                  warmup_steps: int = 500, **training_kwargs) -> Trainer:
    """A Trainer that evaluates and logs once per epoch (extra TrainingArguments as kwargs)."""
    # TODO: TrainingArguments with per-epoch evaluation and logging, then a Trainer
    # BEGIN SOLUTION
    args = TrainingArguments(
        output_dir=output_dir, num_train_epochs=num_train_epochs,
        per_device_train_batch_size=batch_size, per_device_eval_batch_size=batch_size,
        learning_rate=learning_rate, warmup_steps=warmup_steps,
        eval_strategy="epoch", logging_strategy="epoch", save_strategy="no",
        report_to="none", **training_kwargs)
    return Trainer(model=model, args=args, train_dataset=train_dataset,
                   eval_dataset=eval_dataset)
    # END SOLUTION


def loss_history(trainer) -> list:
    """[{'epoch': 1, 'train_loss': ..., 'eval_loss': ...}, ...] from the trainer's log."""
    # TODO: collect the training loss and evaluation loss logged at the end of each epoch
    # BEGIN SOLUTION
    rows = {}
    for entry in trainer.state.log_history:
        epoch = round(entry.get("epoch", 0))
        if "loss" in entry:
            rows.setdefault(epoch, {"epoch": epoch})["train_loss"] = entry["loss"]
        if "eval_loss" in entry:
            rows.setdefault(epoch, {"epoch": epoch})["eval_loss"] = entry["eval_loss"]
    return [rows[epoch] for epoch in sorted(rows)]
    # END SOLUTION


# %% [markdown]
# ## (e) LoRA fine-tuning with peft
# Wrap GPT-2 with LoRA adapters on its attention projection `c_attn`
# (`r=64, lora_alpha=16, lora_dropout=0.1`, no bias); only the adapters are trained.

# %%
def apply_lora(model, r: int = 64, lora_alpha: int = 16, lora_dropout: float = 0.1):
    """A peft model with LoRA adapters on GPT-2's c_attn; the base weights are frozen."""
    # TODO: a LoraConfig for causal LM, then get_peft_model
    # BEGIN SOLUTION
    config = LoraConfig(r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, bias="none",
                        task_type="CAUSAL_LM", target_modules=["c_attn"],
                        fan_in_fan_out=True)   # GPT-2's Conv1D stores weights as (in, out)
    return get_peft_model(model, config)
    # END SOLUTION


# %% [markdown]
# ## (f) Compare full and LoRA fine-tuning
# Time both fine-tunings on the same data and count their trainable parameters.

# %%
def compare_finetuning(train_dataset, eval_dataset, model_name: str = MODEL_NAME,
                       output_dir: str = "./compare", **trainer_kwargs) -> dict:
    """{'full': {...}, 'lora': {...}}: wall-clock seconds, trainable and total parameters."""
    results = {}
    for kind in ("full", "lora"):
        model = AutoModelForCausalLM.from_pretrained(model_name)
        if kind == "lora":
            model = apply_lora(model)
        trainer = build_trainer(model, train_dataset, eval_dataset, f"{output_dir}/{kind}",
                                **trainer_kwargs)
        # TODO: time trainer.train() and record the seconds and the parameter counts
        # BEGIN SOLUTION
        start = time.perf_counter()
        trainer.train()
        results[kind] = {"seconds": time.perf_counter() - start,
                         "trainable_params": count_trainable_parameters(model),
                         "total_params": sum(p.numel() for p in model.parameters())}
        # END SOLUTION
    return results


# %% [markdown]
# ## Runs (for the report)

# %%
if __name__ == "__main__":
    model, tokenizer = load_model_and_tokenizer(MODEL_NAME)
    print(generate_text(model, tokenizer, "The history of Duke University"))
    wikitext = load_wikitext(WIKITEXT_DIR, fraction=0.1)
    datasets = {split: prepare_dataset(texts, tokenizer) for split, texts in wikitext.items()}
    test_loader = DataLoader(datasets["test"], batch_size=8)
    print("pre-trained perplexity:", evaluate_perplexity(model, test_loader))

# %%
if __name__ == "__main__":
    trainer = build_trainer(model, datasets["train"], datasets["validation"])
    trainer.train()
    print(loss_history(trainer))
    trainer.save_model("./gpt2-wikitext")
    finetuned = AutoModelForCausalLM.from_pretrained("./gpt2-wikitext")
    print("fine-tuned perplexity:", evaluate_perplexity(finetuned, test_loader))
    print(generate_text(finetuned, tokenizer, "The history of Duke University"))

# %%
if __name__ == "__main__":
    lora_model = apply_lora(AutoModelForCausalLM.from_pretrained(MODEL_NAME))
    lora_trainer = build_trainer(lora_model, datasets["train"], datasets["validation"],
                                 "./gpt2-wikitext-lora")
    lora_trainer.train()
    print(loss_history(lora_trainer))
    print("LoRA perplexity:", evaluate_perplexity(lora_model, test_loader))
    print(compare_finetuning(datasets["train"], datasets["validation"], num_train_epochs=1))
