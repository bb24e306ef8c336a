"""Hidden tests of LabLLM (ECE 661 HW3 Lab (2), parts (a)-(e)) on a tiny local GPT-2.

Each test sends its observations to the grading parent, which decides (values checked against
the reference's recording, or rules of judges.py); an assert only explains a failure.

Generation is compared with a greedy decoding loop written here, on a model so peaked that
sampling (the course notebook's choice) follows the same path; perplexity with a brute-force
float64 computation (each sequence alone, unpadded): PP = exp(sum NLL / number of predicted
tokens), each sequence predicting all its tokens but the first. Both forms of the notebook are
graded (lmgrade's functions, or the course's tokenize_function / TrainingArguments / LoraConfig;
see conftest.py).
"""
import copy
import math

import pytest
import torch
from torch.utils.data import DataLoader

# -- (a) generate_text -------------------------------------------------------------------------

# On lab.generation_model this prompt's greedy continuation repeats no token and never ends the
# text, and each step has a clear winner (MARGIN): any usual decoding gives the greedy text.
PROMPT = "Hugo Marsh praised the"   # 10 tokens
MARGIN = 30.0


def _greedy_texts(model, tokenizer, prompt, max_length):
    """(prompt + greedy continuation, the continuation alone) up to max_length tokens in all."""
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]         # (1, P)
    prompt_len = ids.shape[1]
    with torch.no_grad():
        while ids.shape[1] < max_length:
            logits = model(ids).logits[0, -1]                             # (V,)
            top2 = logits.topk(2).values
            assert top2[0] - top2[1] > MARGIN, "suite error: no clear greedy choice"
            ids = torch.cat([ids, logits.argmax().view(1, 1)], dim=1)
    assert tokenizer.eos_token_id not in ids[0].tolist(), "suite error: the text ends early"
    full = tokenizer.decode(ids[0], skip_special_tokens=True)
    return full, tokenizer.decode(ids[0, prompt_len:], skip_special_tokens=True)


def _judge_generation(sub, snapshot, lab, model, tokenizer, prompt, max_length, tag=""):
    full, continuation = _greedy_texts(model, tokenizer, prompt, max_length)
    snapshot.check(f"greedy{tag}", full)
    snapshot.check(f"greedy_new{tag}", continuation)
    observed = lab.generated(sub.llm, model, tokenizer, prompt, max_length)
    snapshot.judge(f"text{tag}", observed, "generated_text", keys=[f"greedy{tag}", f"greedy_new{tag}"],
                   what=f"the prompt followed by the model's continuation, {max_length} tokens "
                        "in all (tokenizer.decode of model.generate(..., max_length=max_length))")


def test_generate_text_continues_the_prompt(sub, tiny_model, tokenizer, lab, snapshot):
    model = lab.generation_model(tiny_model).eval()
    _judge_generation(sub, snapshot, lab, model, tokenizer, PROMPT, 22)


def test_generate_text_respects_max_length(sub, tiny_model, tokenizer, lab, snapshot):
    model = lab.generation_model(tiny_model).eval()
    for max_length in (13, 17):
        _judge_generation(sub, snapshot, lab, model, tokenizer, PROMPT, max_length, f"_{max_length}")


# -- (b) dataset preparation -------------------------------------------------------------------

# The first lines of the fixture's raw files: titles, paragraphs and the " " lines between them.
SPLIT_LINES = {"train": ("wiki.train.raw", 100), "validation": ("wiki.valid.raw", 80),
               "test": ("wiki.test.raw", 60)}


def _split_texts(value):
    """A split as a list of strings (a list of lines, or rows with a 'text' field)."""
    if value is None:
        return None
    return [row["text"] if isinstance(row, dict) and "text" in row else row for row in value]


@pytest.mark.parametrize("fraction", [0.1, 0.2])
def test_load_wikitext_fraction(sub, tmp_path, fraction, snapshot):
    files = {}
    for split, (name, count) in SPLIT_LINES.items():
        raw = (sub.fixtures / "wikitext-2-raw" / name).read_text(encoding="utf-8")
        lines = raw.splitlines()[:count]
        (tmp_path / name).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        files[split] = [name, lines]
    splits = sub.llm.load_wikitext(str(tmp_path), fraction=fraction)
    if not isinstance(splits, dict):
        pytest.fail("load_wikitext returns {'train': [...], 'validation': [...], 'test': [...]}",
                    pytrace=False)
    observed = {split: _split_texts(splits.get(split, splits.get("valid") if split == "validation" else None))
                for split in SPLIT_LINES}
    snapshot.judge("splits", observed, "wikitext_fraction", files=files, fraction=fraction,
                   hint="the first lines of each file (blank lines do not count as data)")


def _long_text(tokenizer, tokens=560):
    """A text longer than the course's max_length of 512 tokens."""
    text, line = "", 0
    while len(tokenizer(text)["input_ids"]) < tokens:
        text += " " + PPL_TEXTS[line % 4]
        line += 1
    return text.strip()


def _send_rows(snapshot, rows, keys=("input_ids", "attention_mask")):
    for key in keys:
        if key not in rows:
            pytest.fail(f"each row needs '{key}'", pytrace=False)
        snapshot.check(key, rows[key], rtol=0, atol=0,
                       hint="tokenize with padding='max_length', truncation=True; GPT-2 pads with "
                            "its end-of-text token, on the right")


def test_prepare_dataset_labels_mask_padding(sub, tokenizer, lab, snapshot):
    """Labels are the input ids; at padding they are -100, or the pad id that the course's
    DataCollatorForLanguageModeling(mlm=False) masks. The second text holds an end-of-text
    token: a real token, with a real label."""
    rows = lab.tokenized(sub.llm, tokenizer, lab.WIKI_LINES[:5])
    _send_rows(snapshot, rows)
    if "labels" not in rows:
        pytest.fail("each row needs 'labels' (labels = input_ids for a causal LM)", pytrace=False)
    snapshot.judge("labels", rows["labels"], "lm_labels", ids="input_ids", mask="attention_mask",
                   pad_id=tokenizer.pad_token_id)


def test_prepare_dataset_truncates_and_pads(sub, tokenizer, lab, snapshot):
    texts = [_long_text(tokenizer), lab.WIKI_LINES[3]]
    rows = lab.tokenized(sub.llm, tokenizer, texts)
    _send_rows(snapshot, rows)


# -- (c) perplexity ----------------------------------------------------------------------------

PPL_TEXTS = [  # at most 40 tokens each: padded to 40 or 56, never truncated
    "The bridge at Aldwick was completed in 1880 after 5 years of work .",
    "Edith Carrow was born in Lindale .",
    ("Local newspapers described the abbey as one of the finest in the region , and it became "
     "a listed site after the war ."),
    "The mill is long .",
    "",  # a blank line of WikiText: a row of padding only, nothing to predict
    "In 1902 , Hugo Marsh moved to Port Ewan . <|endoftext|> He worked as a painter .",
]


def brute_force_perplexity(model, tokenizer, texts, every_token=False):
    """exp(mean NLL over every predicted token), float64, each text alone and unpadded; with
    ``every_token``, N counts every real token, the first of each text included (the handout's
    formula read literally, an accepted variant)."""
    model = copy.deepcopy(model).double().eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, return_tensors="pt")["input_ids"]      # (1, n)
            count += int(every_token) * min(ids.shape[1], 1)  # the first token, counted but not predicted
            if ids.shape[1] < 2:
                continue  # nothing to predict
            log_probs = torch.log_softmax(model(ids).logits[0], dim=-1)  # (n, V)
            for t in range(ids.shape[1] - 1):  # position t predicts token t + 1
                total -= log_probs[t, ids[0, t + 1]].item()
                count += 1
    return math.exp(total / count)


def _ppl(sub, model, tokenizer, lab, max_length, batch_size):
    rows = lab.encode_rows(tokenizer, PPL_TEXTS, max_length)
    out = sub.llm.evaluate_perplexity(model, DataLoader(rows, batch_size=batch_size))
    if not isinstance(out, (float, int, torch.Tensor)):
        pytest.fail(f"evaluate_perplexity must return a number, got {type(out).__name__}",
                    pytrace=False)
    return float(out)


PPL_HINT = ("sum the negative log-likelihood of every predicted token (logits at t predict token "
            "t+1; padding excluded) over the whole dataset, divide by the number of predicted "
            "tokens, then exp")


def test_perplexity_matches_brute_force(sub, tiny_model, tokenizer, lab, snapshot):
    # Sharpened: per-token losses range widely, so per-batch or per-sequence averages differ.
    model = lab.sharpen(tiny_model, 8.0)
    model.train()  # evaluate_perplexity must switch dropout off itself
    expected = [brute_force_perplexity(model, tokenizer, PPL_TEXTS, every_token=e) for e in (False, True)]
    got = _ppl(sub, model, tokenizer, lab, max_length=40, batch_size=2)
    snapshot.check("perplexity", got, rtol=1e-4, atol=0, hint=PPL_HINT)
    again = _ppl(sub, model, tokenizer, lab, max_length=40, batch_size=2)
    snapshot.check("perplexity_again", again, rtol=1e-4, atol=0,
                   hint="a second call differs: call model.eval() (dropout is on in training mode)")
    assert min(abs(got - e) / e for e in expected) < 1e-4, "perplexity differs from the brute-force value"


def test_perplexity_ignores_padding_and_batching(sub, tiny_model, tokenizer, lab, snapshot):
    model = lab.sharpen(tiny_model, 8.0).eval()
    for max_length, batch_size in ((40, 2), (56, 3)):
        snapshot.check(f"perplexity_{max_length}_{batch_size}",
                       _ppl(sub, model, tokenizer, lab, max_length, batch_size), rtol=1e-4, atol=0,
                       hint="exclude padding tokens and average over the tokens of the whole "
                            "dataset, not over batches or sequences")


# -- (d) full fine-tuning with the Trainer -----------------------------------------------------


def _lm_loss(model, rows):
    """Token-weighted cross-entropy of `model` on the rows (eval mode, no gradient)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            ids, mask = row["input_ids"][None], row["attention_mask"][None]
            logits = model(input_ids=ids, attention_mask=mask).logits[0, :-1]
            keep = mask[0, 1:].bool()
            nll = torch.nn.functional.cross_entropy(logits[keep], ids[0, 1:][keep], reduction="sum")
            total, count = total + nll.item(), count + int(keep.sum())
    model.train(was_training)
    return total / count


def test_finetune_logs_losses_per_epoch(sub, tiny_model, tokenizer, lab, tmp_path, snapshot):
    train_rows = lab.encode_rows(tokenizer, lab.WIKI_LINES * 2, 24)
    eval_rows = lab.encode_rows(tokenizer, lab.WIKI_LINES[:4], 24)
    before_state = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    before = _lm_loss(tiny_model, eval_rows)
    trainer, _ = lab.trainer_for(sub.llm, tiny_model, train_rows, eval_rows, tokenizer,
                                 str(tmp_path / "out"), num_train_epochs=2, batch_size=4,
                                 learning_rate=2e-3, warmup_steps=0)
    trainer.train()
    model = trainer.model
    changed = sum(not torch.equal(before_state[k], v) for k, v in model.state_dict().items()
                  if k in before_state)
    log = trainer.state.log_history
    history = None
    loss_history = lab.optional(sub.llm, "loss_history")
    if loss_history is not None:
        rows = loss_history(trainer)
        if not isinstance(rows, list):
            pytest.fail("loss_history returns one dict per epoch", pytrace=False)
        history = [[float(r["epoch"]), float(r["train_loss"]), float(r["eval_loss"])] for r in rows]
    snapshot.judge("run", {
        "train": [[float(e["epoch"]), float(e["loss"])] for e in log if "loss" in e],
        "eval": [[float(e["epoch"]), float(e["eval_loss"])] for e in log if "eval_loss" in e],
        "history": history, "before": before, "after": _lm_loss(model, eval_rows),
        "changed": int(changed), "tensors": len(before_state),
    }, "per_epoch_losses", epochs=2, min_changed=0.5,
        hint="TrainingArguments(..., eval_strategy='epoch', logging_strategy='epoch')")


# -- (e) LoRA ----------------------------------------------------------------------------------


def test_lora_trainable_parameters(sub, tiny_model, lab, snapshot):
    model = lab.lora_model(sub.llm, tiny_model)
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    snapshot.check("trainable", {"count": sum(trainable.values()), "tensors": len(trainable),
                                 "only_lora": all("lora_" in n for n in trainable)},
                   hint="LoRA of rank 64 on each layer's c_attn (GPT-2's attention projection), "
                        "bias='none': only the adapters train")


def test_lora_starts_as_the_base_model(sub, tiny_model, tokenizer, lab, snapshot):
    ids = tokenizer(PPL_TEXTS[0], return_tensors="pt")["input_ids"]
    model = lab.lora_model(sub.llm, tiny_model).eval()
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    snapshot.check("logits", logits, hint="before training, the LoRA model computes what GPT-2 "
                                          "computes (peft starts B at zero)")


def test_lora_config(sub, tiny_model, lab, snapshot):
    model = lab.lora_model(sub.llm, tiny_model)
    config = model.peft_config["default"]
    snapshot.check("config", {
        "r": int(config.r), "lora_alpha": float(config.lora_alpha),
        "lora_dropout": float(config.lora_dropout), "bias": str(config.bias),
        "task_type": str(config.task_type).split(".")[-1],
        "target_modules": sorted(config.target_modules or []),
    }, hint="LoraConfig(r=64, lora_alpha=16, lora_dropout=0.1, bias='none', task_type='CAUSAL_LM') "
            "on GPT-2's c_attn")
