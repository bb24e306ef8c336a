"""Public checks of LabLLM (ECE 661 HW3 Lab (2)) on a tiny local GPT-2 (no download)."""
import math

import torch
from torch.utils.data import DataLoader


def test_generate_text_returns_text(sub, tiny_model, tokenizer, lab):
    model = lab.sharpen(tiny_model, 100.0).eval()
    text = sub.llm.generate_text(model, tokenizer, "The bridge at", max_length=8)
    assert isinstance(text, str), f"generate_text must return the decoded text, got {type(text)}"
    assert len(text.strip()) > 0, "generate_text returned an empty string"


def test_prepare_dataset_shapes(sub, tokenizer, lab):
    ds = sub.llm.prepare_dataset(lab.WIKI_LINES[:3], tokenizer, max_length=16)
    assert len(ds) == 3, f"prepare_dataset made {len(ds)} rows from 3 texts"
    row = ds[0]
    for key in ("input_ids", "attention_mask", "labels"):
        assert key in row, f"each row needs '{key}'"
        assert tuple(torch.as_tensor(row[key]).shape) == (16,), \
            f"row['{key}'] must have max_length=16 entries (pad and truncate to max_length)"


def test_perplexity_returns_a_number(sub, tiny_model, tokenizer, lab):
    loader = DataLoader(lab.encode_rows(tokenizer, lab.WIKI_LINES[:4], 24), batch_size=2)
    ppl = float(sub.llm.evaluate_perplexity(tiny_model, loader))
    # A random model over a 512-token vocabulary is close to uniform: perplexity near 512.
    assert math.isfinite(ppl) and 100 < ppl < 2000, \
        f"perplexity {ppl:.4g} is not plausible for a random 512-token model (expected ~512)"


def test_build_trainer_returns_trainer(sub, tiny_model, tokenizer, lab, tmp_path):
    from transformers import Trainer

    rows = lab.encode_rows(tokenizer, lab.WIKI_LINES, 16)
    trainer = sub.llm.build_trainer(tiny_model, rows, rows, output_dir=str(tmp_path / "out"),
                                    num_train_epochs=2, batch_size=4)
    assert isinstance(trainer, Trainer), "build_trainer must return a transformers Trainer"
    assert trainer.args.num_train_epochs == 2 and trainer.args.per_device_train_batch_size == 4, \
        "pass num_train_epochs and batch_size on to TrainingArguments"


def test_apply_lora_returns_peft_model(sub, tiny_model):
    from peft import PeftModel

    model = sub.llm.apply_lora(tiny_model)
    assert isinstance(model, PeftModel), "apply_lora must return peft's get_peft_model(...)"


def test_compare_finetuning_reports_both(sub, tiny_path, tokenizer, lab, tmp_path):
    """Both fine-tunings, one tiny epoch each (checked, not graded: part (f) is written)."""
    rows = lab.encode_rows(tokenizer, lab.WIKI_LINES, 16)
    out = sub.llm.compare_finetuning(rows, rows, model_name=tiny_path,
                                     output_dir=str(tmp_path / "cmp"), num_train_epochs=1,
                                     batch_size=8, warmup_steps=0)
    assert set(out) >= {"full", "lora"}, "compare_finetuning returns {'full': ..., 'lora': ...}"
    for kind in ("full", "lora"):
        assert out[kind]["seconds"] > 0, f"{kind}: wall-clock seconds must be positive"
    assert out["lora"]["trainable_params"] < out["full"]["trainable_params"], \
        "LoRA must train fewer parameters than full fine-tuning"
