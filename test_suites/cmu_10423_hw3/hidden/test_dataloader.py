"""Instruction fine-tuning records (dataloader.py, _add_instruction_finetuning)."""

import torch


def instruct(sub, rec):
    loader = sub.dataloader.CustomDataLoader([], tokenizer=None)
    copy = dict(rec)
    out = loader._add_instruction_finetuning(copy)
    return out if isinstance(out, dict) else copy


def test_instruction_text_format(sub, snapshot, test_records):
    words = []
    for rec in test_records[:6]:
        out = instruct(sub, rec)
        assert out["text"] == rec["text"] and out["label"] == rec["label"], (
            'keep rec["text"] and rec["label"] as they are; add rec["instr_tuned_text"]')
        text = out["instr_tuned_text"]
        prompt = sub.dataloader.get_sentiment_prompt(rec["text"])
        assert text.startswith(prompt), (
            "the instruction-tuned text must start with get_sentiment_prompt(text), the prompt generate.py "
            "shows the model at test time; the label comes after it")
        words.append(text[len(prompt):].strip())
    labels = [rec["label"] for rec in test_records[:6]]
    assert len(set(labels)) == 2
    snapshot.check("label_words", words, hint='append the label as a word: 1 -> "positive", 0 -> "negative"')


def test_same_review_differs_only_by_label(sub, test_records):
    rec = test_records[0]
    pos = instruct(sub, dict(rec, label=1))["instr_tuned_text"]
    neg = instruct(sub, dict(rec, label=0))["instr_tuned_text"]
    prompt = sub.dataloader.get_sentiment_prompt(rec["text"])
    assert pos.startswith(prompt) and neg.startswith(prompt)
    assert pos[len(prompt):].strip() == "positive" and neg[len(prompt):].strip() == "negative", (
        "the text must end with the label word of the record's own label")


def test_batches_are_next_token_pairs(sub, hf_tokenizer, test_records):
    loader = sub.dataloader.CustomDataLoader(test_records[:4], hf_tokenizer, batch_size=4)
    x, y = next(iter(loader.get_loader(shuffle=False)))
    assert x.shape == y.shape and x.dim() == 2
    texts = [instruct(sub, rec)["instr_tuned_text"] for rec in test_records[:4]]
    for row, text in enumerate(texts):
        ids = hf_tokenizer(text)["input_ids"]
        assert x[row, :len(ids)].tolist() == ids, "input_ids must be the tokenised instruction-tuned text"
        assert y[row, :len(ids) - 1].tolist() == ids[1:]
        assert bool((y[row, len(ids) - 1:] == -1).all())
    assert x.dtype == torch.long
