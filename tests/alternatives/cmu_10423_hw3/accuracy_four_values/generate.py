"""Sampling from a (LoRA fine-tuned) GPT-2 and its test accuracy (HW3 section 2,
"Accuracy Evaluation Method").

    python generate.py --init_from=resume --out_dir=gpt-lora-default

The model sees each test review's prompt (dataloader.get_sentiment_prompt) and writes a few
tokens; the prediction is the label word found at the start of what it wrote.
"""

import json
import logging
import os
import sys
from contextlib import nullcontext

import torch
from configurator import load_config
from dataloader import get_sentiment_prompt, load_split, load_tokenizer
from model import GPT, GPTConfig

logger = logging.getLogger("generate")

# GPT-2 seldom stops after the label, so only the start of the continuation is read:
# 5 new tokens are about 20 to 30 characters
LABEL_WINDOW = 20

# generate.py's settings (handout Table 2), overridden by --key=value flags
DEFAULTS = {"init_from": "resume", "out_dir": "gpt-lora-default", "device": "cuda",
            "max_new_tokens": 5, "temperature": 1.0, "top_k": 200,
            "dataset": "rotten_tomatoes", "tokenizer": "gpt2"}


def predict_label(continuation: str) -> int:
    """1 if "positive", 0 if "negative" appears in the first LABEL_WINDOW characters of the
    text the model wrote after the prompt (the earlier one if both do); -1 (garbage) otherwise."""
    # BEGIN SOLUTION
    head = continuation.lstrip()[:LABEL_WINDOW]
    found = {label: head.find(word) for label, word in ((1, "positive"), (0, "negative")) if word in head}
    return min(found, key=found.get) if found else -1
    # END SOLUTION


class ModelSampler:
    """A model loaded for sampling, with the test split it is evaluated on."""

    def __init__(self, out_dir, init_from="resume", device="cuda", max_new_tokens=5, temperature=1.0,
                 top_k=200, ckpt_last=False, dataset="rotten_tomatoes", tokenizer="gpt2"):
        self.out_dir = out_dir
        self.init_from = init_from
        self.device = device
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_k = top_k
        self.ckpt_last = ckpt_last
        self.dataset = dataset
        self.tokenizer = tokenizer
        self._initialize_sampling()

    def _initialize_sampling(self):
        torch.manual_seed(1337)
        device_type = "cuda" if "cuda" in self.device else "cpu"
        self.ctx = nullcontext() if device_type == "cpu" else torch.autocast(device_type=device_type, dtype=torch.bfloat16)
        if os.path.isdir(self.dataset):
            self.test_dataset = load_split(self.dataset, "test")
        else:
            # the handout's fixed subset: 100 test reviews, shuffled with seed 42
            from datasets import load_dataset

            self.test_dataset = list(load_dataset(self.dataset, split="test").shuffle(seed=42).select(range(100)))
        if self.init_from == "resume":
            ckpt_path = os.path.join(self.out_dir, "ckpt_last.pt" if self.ckpt_last else "ckpt.pt")
            checkpoint = torch.load(ckpt_path, map_location=self.device)
            self.model = GPT(GPTConfig(**checkpoint["model_args"]))
            self.model.load_state_dict(checkpoint["model"])  # saved in train mode: W0, A and B apart
        else:
            self.model = GPT.from_pretrained(self.init_from, {"dropout": 0.0})
        self.model.eval()  # merges the LoRA updates into the weights
        self.model.to(self.device)
        tok = load_tokenizer(self.tokenizer)
        self.encode = tok.encode
        self.decode = lambda ids: tok.decode(ids, clean_up_tokenization_spaces=False)

    def get_generation(self, prompt):
        """The prompt followed by the text the model writes after it."""
        prompt_ids = self.encode(prompt)
        x = torch.tensor(prompt_ids, dtype=torch.long, device=self.device)[None, ...]  # (1, t)
        with torch.no_grad(), self.ctx:
            y = self.model.generate(x, self.max_new_tokens, temperature=self.temperature, top_k=self.top_k)
        return prompt + self.decode(y[0, len(prompt_ids):].tolist())

    def predict_labels(self, dataset):
        """{index: {"response", "true label", "predicted label"}} for every record."""
        predictions = {}
        for i, rec in enumerate(dataset):
            prompt = get_sentiment_prompt(rec["text"])
            response = self.get_generation(prompt)
            predictions[i] = {"response": response, "true label": rec["label"],
                              "predicted label": predict_label(response[len(prompt):])}
        return predictions

    def compute_accuracy(self, predictions):
        correct = sum(p["predicted label"] == p["true label"] for p in predictions.values())
        return correct / len(self.test_dataset), correct

    def get_accuracy(self):
        """The course starter's form: (accuracy, positive, negative, correct), with the
        predictions and counts written to out_dir."""
        predictions = self.predict_labels(self.test_dataset)
        accuracy, correct = self.compute_accuracy(predictions)
        positive = sum(p["predicted label"] == 1 for p in predictions.values())
        negative = sum(p["predicted label"] == 0 for p in predictions.values())
        if self.out_dir is not None:
            os.makedirs(self.out_dir, exist_ok=True)
            with open(os.path.join(self.out_dir, "results.json"), "w") as f:
                json.dump({"pos_counter": positive, "neg_counter": negative, "accuracy": accuracy,
                           "counter": correct}, f)
            with open(os.path.join(self.out_dir, "predictions.json"), "w") as f:
                json.dump(predictions, f, indent=2)
        return accuracy, positive, negative, correct


def main(argv=None):
    config = load_config(sys.argv[1:] if argv is None else argv, DEFAULTS)
    results = {}
    for ckpt_last in ([False, True] if config["init_from"] == "resume" else [False]):
        sampler = ModelSampler(config["out_dir"], config["init_from"], config["device"], config["max_new_tokens"],
                               config["temperature"], config["top_k"], ckpt_last=ckpt_last,
                               dataset=config["dataset"], tokenizer=config["tokenizer"])
        accuracy, n_positive, n_negative, _ = sampler.get_accuracy()
        name = "last" if ckpt_last else "best"
        results[name] = {"accuracy": accuracy, "positive_predictions": n_positive,
                         "negative_predictions": n_negative}
        logger.info("%s checkpoint: accuracy %.3f, positive predictions %d, negative predictions %d",
                    name, accuracy, n_positive, n_negative)
    os.makedirs(config["out_dir"], exist_ok=True)
    with open(os.path.join(config["out_dir"], "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
