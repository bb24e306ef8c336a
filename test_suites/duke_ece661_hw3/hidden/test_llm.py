"""Hidden value tests of LabLLM (ECE 661 HW3 Lab (2), parts (a)-(e)) on a tiny local GPT-2.

Generation is compared with a greedy decoding loop written here; perplexity with a brute-force
float64 computation written here (each sequence alone, unpadded): PP = exp(sum NLL / number of
predicted tokens), each sequence predicting all its tokens but the first.
"""
import copy
import math

import pytest
import torch
from torch.utils.data import DataLoader

PROMPT = "The bridge at"


# -- (a) generate_text -------------------------------------------------------------------------


def _greedy_ids(model, tokenizer, prompt, max_length):
    """Prompt ids and the greedy continuation up to max_length tokens in all (stops at eos)."""
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]         # (1, P)
    prompt_len = ids.shape[1]
    with torch.no_grad():
        while ids.shape[1] < max_length:
            logits = model(ids).logits[0, -1]                             # (V,)
            top2 = logits.topk(2).values
            assert top2[0] - top2[1] > 1e-3, "suite error: near-tie in the greedy reference"
            nxt = logits.argmax().view(1, 1)
            ids = torch.cat([ids, nxt], dim=1)
            if nxt.item() == tokenizer.eos_token_id:
                break
    return ids[0, :prompt_len].tolist(), ids[0, prompt_len:].tolist()


def _generate(sub, tiny_model, tokenizer, lab, max_length):
    # Mildly sharpened: clear greedy choices (no near-ties), yet a sampler leaves the greedy path.
    model = lab.sharpen(tiny_model, 20.0).eval()
    prompt_ids, new_ids = _greedy_ids(model, tokenizer, PROMPT, max_length)
    text = sub.llm.generate_text(model, tokenizer, PROMPT, max_length=max_length)
    assert isinstance(text, str), f"generate_text must return text (decode the ids), got {type(text)}"
    full = tokenizer.decode(prompt_ids + new_ids, skip_special_tokens=True)
    continuation = tokenizer.decode(new_ids, skip_special_tokens=True)
    return text.strip(), full.strip(), continuation.strip()


def test_generate_text_is_greedy(sub, tiny_model, tokenizer, lab):
    text, full, continuation = _generate(sub, tiny_model, tokenizer, lab, max_length=10)
    again, _, _ = _generate(sub, tiny_model, tokenizer, lab, max_length=10)
    assert text == again, "two calls gave different texts: decode greedily (do_sample=False)"
    if not text.startswith((full, continuation)):  # no expected text shown
        pytest.fail("the generated text is not the model's greedy continuation of the prompt: "
                    "call model.generate(**inputs, max_length=..., do_sample=False) and decode "
                    "the output ids (no sampling, beams or repetition penalties)", pytrace=False)


def test_generate_text_respects_max_length(sub, tiny_model, tokenizer, lab):
    text, full, continuation = _generate(sub, tiny_model, tokenizer, lab, max_length=7)
    if text not in (full, continuation):
        pytest.fail("with max_length=7 the output must hold at most 7 tokens, prompt included "
                    "(pass max_length to generate; max_new_tokens counts only the new ones)",
                    pytrace=False)


# -- (b) dataset preparation -------------------------------------------------------------------


def _write_splits(tmp_path, n=50):
    lines = {split: [f" Line {i} of the {split} split , about the canal at Lindale . "
                     for i in range(n)] for split in ("train", "valid", "test")}
    for split, rows in lines.items():
        (tmp_path / f"wiki.{split}.raw").write_text("".join(r + "\n" for r in rows))
    return lines


@pytest.mark.parametrize("fraction", [0.1, 0.2])
def test_load_wikitext_fraction(sub, tmp_path, fraction):
    lines = _write_splits(tmp_path)
    splits = sub.llm.load_wikitext(str(tmp_path), fraction=fraction)
    for split, raw in (("train", "train"), ("validation", "valid"), ("test", "test")):
        assert split in splits, f"load_wikitext must return the '{split}' split"
        got = [line.strip() for line in splits[split] if line.strip()]
        want = round(fraction * len(lines[raw]))
        assert len(got) == want, (f"'{split}' has {len(got)} lines; fraction={fraction} of 50 "
                                  f"lines is {want}")
        # The first lines (as `split="train[:10%]"` takes them) or a sample: both are 10%.
        assert len(set(got)) == len(got) and set(got) <= {line.strip() for line in lines[raw]}, \
            f"'{split}' must hold {want} distinct lines of wiki.{raw}.raw"


def _prepared(sub, tokenizer, lab, max_length=20):
    texts = lab.WIKI_LINES[:5]
    ds = sub.llm.prepare_dataset(texts, tokenizer, max_length=max_length)
    rows = [ds[i] for i in range(len(ds))]
    stack = {key: torch.stack([torch.as_tensor(r[key]) for r in rows])
             for key in ("input_ids", "attention_mask", "labels")}
    return texts, stack


def test_prepare_dataset_labels_mask_padding(sub, tokenizer, lab, snapshot):
    _, rows = _prepared(sub, tokenizer, lab, max_length=32)
    mask = rows["attention_mask"].bool()
    assert (~mask).any(), "suite error: the test texts should need padding"
    assert torch.equal(rows["labels"][mask], rows["input_ids"][mask]), \
        "labels must equal input_ids at the real (non-padding) tokens"
    assert (rows["labels"][~mask] == -100).all(), \
        "labels must be -100 at padding positions so the loss ignores them"
    snapshot.check("labels", rows["labels"], rtol=0, atol=0)


def test_prepare_dataset_truncates_and_pads(sub, tokenizer, lab, snapshot):
    texts, rows = _prepared(sub, tokenizer, lab, max_length=20)
    lengths = [len(tokenizer(t)["input_ids"]) for t in texts]
    assert any(n > 20 for n in lengths) and any(n < 20 for n in lengths), "suite error"
    assert rows["input_ids"].shape == (5, 20), \
        f"input_ids have shape {tuple(rows['input_ids'].shape)}; pad and truncate to max_length"
    snapshot.check("input_ids", rows["input_ids"], rtol=0, atol=0,
                   hint="pad on the right with the tokenizer's pad token (= eos for GPT-2)")
    snapshot.check("attention_mask", rows["attention_mask"], rtol=0, atol=0)


# -- (c) perplexity ----------------------------------------------------------------------------

PPL_TEXTS = [  # 22, 17, 30, 8 and 33 tokens: padded to 40 or 56, never truncated
    "The bridge at Aldwick was completed in 1880 after 5 years of work .",
    "Edith Carrow was born in Lindale .",
    ("Local newspapers described the abbey as one of the finest in the region , and it became "
     "a listed site after the war ."),
    "The mill is long .",
    "In 1902 , Hugo Marsh moved to Port Ewan and worked as a painter for many years .",
]


def brute_force_perplexity(model, tokenizer, texts):
    """exp(mean NLL over every predicted token), float64, each text alone and unpadded."""
    model = copy.deepcopy(model).double().eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, return_tensors="pt")["input_ids"]      # (1, n)
            log_probs = torch.log_softmax(model(ids).logits[0], dim=-1)  # (n, V)
            for t in range(ids.shape[1] - 1):  # position t predicts token t + 1
                total -= log_probs[t, ids[0, t + 1]].item()
                count += 1
    return math.exp(total / count)


def _ppl(sub, model, tokenizer, lab, max_length, batch_size):
    rows = lab.encode_rows(tokenizer, PPL_TEXTS, max_length)
    return float(sub.llm.evaluate_perplexity(model, DataLoader(rows, batch_size=batch_size)))


def test_perplexity_matches_brute_force(sub, tiny_model, tokenizer, lab):
    # Sharpened: per-token losses range widely, so per-batch or per-sequence averages differ.
    model = lab.sharpen(tiny_model, 8.0)
    model.train()  # evaluate_perplexity must switch dropout off itself
    expected = brute_force_perplexity(model, tokenizer, PPL_TEXTS)
    got = _ppl(sub, model, tokenizer, lab, max_length=40, batch_size=2)
    again = _ppl(sub, model, tokenizer, lab, max_length=40, batch_size=2)
    assert got == pytest.approx(again, rel=1e-6), \
        "two calls gave different perplexities: call model.eval() (dropout is on in training mode)"
    rel = abs(got - expected) / expected
    assert rel < 1e-4, (
        f"perplexity is off by {100 * rel:.3g}% (relative): sum the negative log-likelihood of "
        "every predicted token (logits at t predict token t+1; padding excluded) over the whole "
        "dataset, divide by the number of predicted tokens (attention_mask[:, 1:].sum()), then exp")


def test_perplexity_ignores_padding_and_batching(sub, tiny_model, tokenizer, lab):
    model = lab.sharpen(tiny_model, 8.0).eval()
    a = _ppl(sub, model, tokenizer, lab, max_length=40, batch_size=2)
    b = _ppl(sub, model, tokenizer, lab, max_length=56, batch_size=3)
    assert a == pytest.approx(b, rel=1e-5), (
        "perplexity changes with the padding length or the batch size: exclude padding tokens "
        "and average over tokens of the whole dataset, not over batches")


# -- (d) full fine-tuning with the Trainer -----------------------------------------------------


def test_finetune_logs_losses_per_epoch(sub, tiny_model, tokenizer, lab, tmp_path):
    train_rows = lab.encode_rows(tokenizer, lab.WIKI_LINES * 2, 24)
    eval_rows = lab.encode_rows(tokenizer, lab.WIKI_LINES[:4], 24)
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    trainer = sub.llm.build_trainer(tiny_model, train_rows, eval_rows,
                                    output_dir=str(tmp_path / "out"), num_train_epochs=2,
                                    batch_size=4, learning_rate=2e-3, warmup_steps=0)
    trainer.train()
    changed = [k for k, v in trainer.model.state_dict().items()
               if k in before and not torch.equal(before[k], v)]
    assert len(changed) >= len(before) // 2, "full fine-tuning must update the model's weights"
    history = sub.llm.loss_history(trainer)
    assert [int(row["epoch"]) for row in history] == [1, 2], (
        "loss_history must give one row per epoch: set eval_strategy='epoch' and "
        "logging_strategy='epoch' in TrainingArguments")
    for row in history:
        assert math.isfinite(row["train_loss"]) and math.isfinite(row["eval_loss"]), \
            "each epoch needs a finite 'train_loss' and 'eval_loss'"
    logged_eval = [e["eval_loss"] for e in trainer.state.log_history if "eval_loss" in e]
    assert [row["eval_loss"] for row in history] == pytest.approx(logged_eval), \
        "'eval_loss' must be the validation loss the trainer logged for that epoch"
    assert history[1]["eval_loss"] < history[0]["eval_loss"], \
        "the validation loss should fall from epoch 1 to 2 on this tiny task"


# -- (e) LoRA ----------------------------------------------------------------------------------


@pytest.mark.parametrize("r", [64, 4])
def test_lora_trainable_parameters(sub, tiny_model, r):
    cfg = tiny_model.config
    model = sub.llm.apply_lora(tiny_model) if r == 64 else sub.llm.apply_lora(tiny_model, r=r)
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    # One A (r x d) and one B (3d x r) per layer's c_attn.
    expected = cfg.n_layer * r * (cfg.n_embd + 3 * cfg.n_embd)
    assert all("lora_" in n for n in trainable), \
        "only the LoRA matrices may be trainable (bias='none', base model frozen)"
    assert sum(trainable.values()) == expected, (
        f"{sum(trainable.values())} trainable parameters; LoRA of rank {r} on each layer's "
        "c_attn (target_modules=['c_attn']) has r * (in + out) per layer")


def test_lora_starts_as_the_base_model(sub, tiny_model, tokenizer):
    ids = tokenizer(PPL_TEXTS[0], return_tensors="pt")["input_ids"]
    tiny_model.eval()
    with torch.no_grad():
        base = tiny_model(ids).logits.clone()
    model = sub.llm.apply_lora(tiny_model).eval()
    with torch.no_grad():
        lora = model(input_ids=ids).logits
    assert (lora - base).abs().max().item() < 1e-5, \
        "before training, the LoRA model must compute exactly what GPT-2 computes (B = 0)"


def test_lora_config(sub, tiny_model):
    model = sub.llm.apply_lora(tiny_model)
    config = model.peft_config["default"]
    got = (config.r, config.lora_alpha, config.lora_dropout, config.bias)
    assert got == (64, 16, 0.1, "none"), \
        f"LoraConfig has (r, lora_alpha, lora_dropout, bias) = {got}; use (64, 16, 0.1, 'none')"
    assert str(config.task_type).endswith("CAUSAL_LM"), "task_type must be 'CAUSAL_LM'"
