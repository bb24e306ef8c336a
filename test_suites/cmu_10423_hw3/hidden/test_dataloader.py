"""Instruction fine-tuning records (dataloader.py, _add_instruction_finetuning).

The loader is built as train.py builds it (a datasets.Dataset and a Hugging Face tokenizer).
The label may be written as a word or as a number: the handout makes word labels optional.
"""

import torch


def test_instruction_text_format(sub, snapshot, make_loader, instruction_observations, test_records):
    records = test_records[:6]  # both labels
    loader = make_loader(records)
    snapshot.check("records", records)  # the parent's rule reads the reviews and labels from here
    snapshot.judge("instruction_texts", instruction_observations(loader, records), "instruction_texts",
                   records="records",
                   hint='rec["instr_tuned_text"] = get_sentiment_prompt(rec["text"]) followed by the label')


def test_same_review_differs_only_by_label(sub, snapshot, make_loader, instruction_observations, test_records):
    rec = test_records[0]
    records = [dict(rec, label=1), dict(rec, label=0), dict(rec, label=1)]
    loader = make_loader(records)
    snapshot.check("records", records)
    snapshot.judge("instruction_texts", instruction_observations(loader, records), "instruction_texts",
                   records="records", hint="the text must end with the label of the record's own label")


def test_batches_are_next_token_pairs(sub, snapshot, make_loader, hf_tokenizer, test_records):
    # collate_fn is provided code (0 points): a check that the records go through the loader.
    # Past the end of a text the target is an ignored index: the starter pads with the
    # tokenizer's pad_token_id, the reference with -1; both are accepted
    loader = make_loader(test_records[:4], batch_size=4)
    x, y = next(iter(loader.get_loader(shuffle=False)))
    assert x.shape == y.shape and x.dim() == 2 and x.dtype == torch.long
    for row, rec in enumerate(test_records[:4]):
        text = loader._add_instruction_finetuning(dict(rec))
        text = (text if isinstance(text, dict) else rec).get("instr_tuned_text", "")
        ids = hf_tokenizer(text)["input_ids"]
        assert x[row, :len(ids)].tolist() == ids, "input_ids must be the tokenised instruction-tuned text"
        assert y[row, :len(ids) - 1].tolist() == ids[1:], "targets must be the inputs shifted by one"
        pad = {-1, -100, hf_tokenizer.pad_token_id}
        assert set(y[row, len(ids):].tolist()) <= pad, "targets past the text must be an ignored index"
