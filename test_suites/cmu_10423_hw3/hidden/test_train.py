"""train.py: a pretrained model fine-tuned with LoRA trains only A and B.

The model is built the way the submission's train.py builds it, from 'gpt2' served offline
(conftest.offline_gpt2), through either form:
- `init_model(config)` (the reference's helper, with configurator-style --key=value settings);
- the course starter's `main()` (argparse flags --lora_rank, --lora_alpha, ...), which builds the
  model inline: it is run with its data, tokenizer and wandb stubbed and stopped when it moves
  the model to the device, right after the TODO this test grades.
"""

import json
import sys

import pytest


class _ModelBuilt(BaseException):  # a signal that passes through `except Exception`
    def __init__(self, model):
        super().__init__("model built")
        self.model = model


class _Anything:
    """wandb, load_dataset(...) results and the like: every attribute a no-op."""

    def __init__(self, records=()):
        self.records = list(records)
        self.column_names = ["text", "label"]

    def __getattr__(self, name):
        return lambda *args, **kwargs: self

    def __call__(self, *args, **kwargs):
        return self

    def __iter__(self):
        return iter(self.records)

    def __len__(self):
        return len(self.records)

    def __getitem__(self, key):
        return self.records[key] if isinstance(key, int) else [r[key] for r in self.records]


def build(sub, tmp_path, monkeypatch, hf_tokenizer, test_records, rank: int):
    """The model the submission's train.py fine-tunes with this LoRA rank (0: no LoRA)."""
    train = sys.modules[sub.train.__name__]
    if "init_model" in vars(train):
        config = train.load_config([train.DEFAULT_CONFIG, "--init_from=gpt2", f"--rank={rank}", "--alpha=8",
                                    "--lora_dropout=0.0", f"--out_dir={tmp_path / 'out'}"])
        model, _ = train.init_model(config)
        return model
    if "main" not in vars(train):
        pytest.fail("train.py defines neither init_model(config) nor main(): the grader cannot build its model",
                    pytrace=False)
    gpt = sys.modules[sub.model.__name__].GPT

    def stop(self, *args, **kwargs):
        raise _ModelBuilt(self)

    monkeypatch.setattr(gpt, "to", stop)
    monkeypatch.setattr(sys, "argv", ["train.py", "--init_from=gpt2", f"--lora_rank={rank}", "--lora_alpha=8",
                                      "--lora_dropout=0.0", "--device=cpu", "--dtype=float32",
                                      f"--out_dir={tmp_path / 'out'}"])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wandb_api.json").write_text(json.dumps({"wandb_api_key": "offline"}), encoding="utf-8")
    tokenizer_cls = type("AutoTokenizer", (), {"from_pretrained": staticmethod(lambda *a, **k: hf_tokenizer)})
    stubs = {"wandb": _Anything(), "load_dataset": _Anything(test_records), "AutoTokenizer": tokenizer_cls,
             "CustomDataLoader": _Anything()}
    for name, stub in stubs.items():
        if name in vars(train):
            monkeypatch.setattr(train, name, stub)
    try:
        train.main()
    except _ModelBuilt as built:
        return built.model
    except SystemExit as err:
        pytest.fail(f"train.main() exited ({err}) with the starter's flags --init_from=gpt2 --lora_rank "
                    "--lora_alpha --lora_dropout --device --dtype --out_dir", pytrace=False)
    pytest.fail("train.main() returned without moving a GPT to the device", pytrace=False)


def test_pretrained_lora_trains_only_A_and_B(sub, snapshot, offline_gpt2, tmp_path, monkeypatch, hf_tokenizer,
                                             test_records):
    model = build(sub, tmp_path, monkeypatch, hf_tokenizer, test_records, rank=4)
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    snapshot.check("trainable", trainable,
                   hint="with LoRA on (rank > 0) only lora_A and lora_B may train: call mark_only_lora_as_trainable")
    snapshot.check("n_parameters", sum(p.numel() for p in model.parameters()))


def test_full_finetuning_without_lora(sub, snapshot, offline_gpt2, tmp_path, monkeypatch, hf_tokenizer,
                                      test_records):
    model = build(sub, tmp_path, monkeypatch, hf_tokenizer, test_records, rank=0)
    frozen = sorted(n for n, p in model.named_parameters() if not p.requires_grad)
    snapshot.check("frozen", frozen, hint="with rank 0 (fine-tuning without LoRA) every parameter trains")
    snapshot.check("n_trainable", sum(p.numel() for p in model.parameters() if p.requires_grad))
