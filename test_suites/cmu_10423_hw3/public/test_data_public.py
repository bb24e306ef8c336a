"""Public checks of dataloader.py and generate.py."""


def test_instruction_text_has_review_and_label(sub):
    loader = sub.dataloader.CustomDataLoader([], tokenizer=None)
    rec = {"text": "a gentle , funny film .", "label": 1}
    copy = dict(rec)
    out = loader._add_instruction_finetuning(copy)
    out = out if isinstance(out, dict) else copy  # filled in place or returned: both are fine
    text = out.get("instr_tuned_text")
    assert isinstance(text, str), '_add_instruction_finetuning must add a string rec["instr_tuned_text"]'
    assert rec["text"] in text, "the instruction-tuned text must contain the review"
    assert text.rstrip().endswith("positive"), "the text must end with the label as a word (1 -> positive)"


def test_get_accuracy_returns_three_numbers(sub, stub_sampler, test_records):
    records = test_records[:2]
    sampler, _ = stub_sampler(records, [" positive", " negative"])
    result = sampler.get_accuracy()
    assert isinstance(result, tuple) and len(result) == 3, (
        "get_accuracy must return (accuracy, positive_predictions, negative_predictions)")
    accuracy, n_pos, n_neg = result
    assert 0.0 <= accuracy <= 1.0
    assert (n_pos, n_neg) == (1, 1)
