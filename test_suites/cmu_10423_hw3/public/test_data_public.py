"""Public checks of dataloader.py and generate.py.

Run them locally with `pytest` from your handout folder.
"""


def test_instruction_text_has_review_and_label(sub, snapshot, make_loader, instruction_observations):
    records = [{"text": "a gentle , funny film .", "label": 1}, {"text": "a dull , lifeless film .", "label": 0}]
    loader = make_loader(records)
    snapshot.check("records", records)
    snapshot.judge("instruction_texts", instruction_observations(loader, records), "instruction_texts",
                   records="records",
                   hint='rec["instr_tuned_text"] = get_sentiment_prompt(rec["text"]) followed by the label '
                        '("positive" / "negative", or 1 / 0)')


def test_get_accuracy_returns_accuracy_and_counts(sub, snapshot, stub_sampler, test_records, label_strings,
                                                  accuracy_of):
    records = test_records[:2]
    sampler, _ = stub_sampler(records, [" " + label_strings[1], " " + label_strings[0]])
    result = accuracy_of(sampler.get_accuracy(), len(records))
    snapshot.check("result", result,
                   hint="get_accuracy returns (accuracy, positive_predictions, negative_predictions) "
                        "(the starter's 4th value, the number of correct predictions, is fine too)")
