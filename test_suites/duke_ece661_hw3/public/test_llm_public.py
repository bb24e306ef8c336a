"""Public checks of LabLLM (ECE 661 HW3 Lab (2)) on a tiny local GPT-2 (no download).

Both forms of the notebook are accepted: lmgrade's functions (prepare_dataset, build_trainer,
apply_lora) or the course notebook's tokenize_function, TrainingArguments and LoraConfig.
"""
import math

import torch
from torch.utils.data import DataLoader

PROMPT = "Rowan Pike was born in"   # 12 tokens


def test_generate_text_returns_text(sub, tiny_model, tokenizer, lab, snapshot):
    model = lab.generation_model(tiny_model).eval()
    ids = tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    prompt_len = ids.shape[1]
    with torch.no_grad():
        while ids.shape[1] < 18:
            ids = torch.cat([ids, model(ids).logits[0, -1].argmax().view(1, 1)], dim=1)
    snapshot.check("greedy", tokenizer.decode(ids[0], skip_special_tokens=True))
    snapshot.check("greedy_new", tokenizer.decode(ids[0, prompt_len:], skip_special_tokens=True))
    observed = lab.generated(sub.llm, model, tokenizer, PROMPT, 18)
    snapshot.judge("text", observed, "generated_text", keys=["greedy", "greedy_new"],
                   what="the prompt followed by the model's continuation (18 tokens in all)")


def test_prepare_dataset_shapes(sub, tokenizer, lab, snapshot):
    rows = lab.tokenized(sub.llm, tokenizer, [lab.WIKI_LINES[0], lab.WIKI_LINES[2], lab.WIKI_LINES[4]])
    for key in ("input_ids", "attention_mask", "labels"):
        lab.expect(key in rows, f"each row needs '{key}'")
        lab.expect(tuple(rows[key].shape) == (3, 512),
                   f"{key} must have 512 entries per row (padding='max_length', max_length=512)")
    snapshot.check("input_ids", rows["input_ids"], rtol=0, atol=0)
    snapshot.check("attention_mask", rows["attention_mask"], rtol=0, atol=0)
    snapshot.judge("labels_shape", rows["labels"], "shape")


def test_perplexity_returns_a_number(sub, tiny_model, tokenizer, lab, snapshot):
    loader = DataLoader(lab.encode_rows(tokenizer, lab.WIKI_LINES[:4], 24), batch_size=2)
    ppl = float(sub.llm.evaluate_perplexity(tiny_model, loader))
    # A random model over a 512-token vocabulary is close to uniform: perplexity near 512.
    assert math.isfinite(ppl) and 100 < ppl < 2000, \
        f"perplexity {ppl:.4g} is not plausible for a random 512-token model (expected ~512)"
    snapshot.check("perplexity", ppl, rtol=1e-4, atol=0)


def test_build_trainer_returns_trainer(sub, tiny_model, tokenizer, lab, tmp_path, snapshot):
    from transformers import Trainer, TrainingArguments

    build = lab.optional(sub.llm, "build_trainer")
    if build is not None:
        rows = lab.encode_rows(tokenizer, lab.WIKI_LINES, 16)
        trainer = build(tiny_model, rows, rows, output_dir=str(tmp_path / "out"),
                        num_train_epochs=2, batch_size=4)
        lab.expect(isinstance(trainer, Trainer), "build_trainer must return a transformers Trainer")
        args = trainer.args
    else:  # the course notebook: TrainingArguments in a top-level cell
        found = lab.module_objects(sub.llm, TrainingArguments)
        lab.expect(found, "LabLLM defines neither build_trainer(...) nor TrainingArguments")
        args = found[0]
    snapshot.judge("settings", [float(args.num_train_epochs), int(args.per_device_train_batch_size)],
                   "one_of_values", choices=[[2.0, 4], [3.0, 8]], what="(epochs, batch size)",
                   expected="build_trainer passes num_train_epochs and batch_size on to "
                            "TrainingArguments (the course notebook: 3 epochs, batch 8)")


def test_apply_lora_returns_peft_model(sub, tiny_model, lab, snapshot):
    from peft import PeftModel

    model = lab.lora_model(sub.llm, tiny_model)
    snapshot.check("peft", {"peft_model": isinstance(model, PeftModel),
                            "adapted": sorted({n.split(".")[-1] for n, m in model.named_modules()
                                               if hasattr(m, "lora_A")})},
                   hint="get_peft_model(model, LoraConfig(...)) with LoRA on GPT-2's c_attn")


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
