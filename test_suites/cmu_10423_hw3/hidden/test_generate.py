"""ModelSampler.get_accuracy on fixed generations (generate.py)."""

# what the model "writes" after the prompt; the first few characters decide the prediction
GOOD_POS = [" positive", "positive.", " positive review", "\npositive"]
GOOD_NEG = [" negative", "negative!", " negative\n", "  negative"]
GARBAGE = [" the the the", "", " ???", " 5 stars"]
# a label word, but only after 40 characters: too late to count
LATE = [" i would say that this one is, all things considered, positive",
        " hard to tell. the acting, the plot, the music: all negative"]


def run(sub, stub_sampler, records, continuations):
    sampler, generation = stub_sampler(records, continuations)
    result = sampler.get_accuracy()
    assert len(generation.prompts) == len(records), "get_accuracy must generate once for every test record"
    prompts = [sub.dataloader.get_sentiment_prompt(rec["text"]) for rec in records]
    assert sorted(generation.prompts) == sorted(prompts), (
        "prompt the model with get_sentiment_prompt(record['text']), the prompt used in training")
    return result


def test_accuracy_correct_and_wrong(sub, snapshot, stub_sampler, test_records):
    records = test_records[:8]
    # right answers for the first five, the opposite label for the last three
    words = [GOOD_POS[i % 4] if (rec["label"] == 1) == (i < 5) else GOOD_NEG[i % 4] for i, rec in enumerate(records)]
    accuracy, n_pos, n_neg = run(sub, stub_sampler, records, words)
    snapshot.check("accuracy", accuracy)
    snapshot.check("counts", [n_pos, n_neg])


def test_garbage_counts_as_wrong(sub, snapshot, stub_sampler, test_records):
    records = test_records[:8]
    words = [(GOOD_POS if rec["label"] == 1 else GOOD_NEG)[i % 4] if i % 2 == 0 else GARBAGE[i // 2]
             for i, rec in enumerate(records)]
    accuracy, n_pos, n_neg = run(sub, stub_sampler, records, words)
    assert accuracy < 1.0, "generations without a label (garbage) must count as wrong and stay in the denominator"
    snapshot.check("accuracy", accuracy, hint="garbage is wrong, never left out of the denominator")
    snapshot.check("counts", [n_pos, n_neg])


def test_labels_read_from_the_start_only(sub, snapshot, stub_sampler, test_records):
    records = test_records[:4]
    words = [LATE[rec["label"]] if i < 2 else (GOOD_NEG if rec["label"] == 0 else GOOD_POS)[i]
             for i, rec in enumerate(records)]
    accuracy, n_pos, n_neg = run(sub, stub_sampler, records, words)
    snapshot.check("accuracy", accuracy,
                   hint="look for the label in the first few characters after the prompt only, not in the "
                        "prompt and not 40 characters later")
    snapshot.check("counts", [n_pos, n_neg])


def test_all_garbage_is_zero(sub, snapshot, stub_sampler, test_records):
    records = test_records[:4]
    accuracy, n_pos, n_neg = run(sub, stub_sampler, records, GARBAGE)
    snapshot.check("accuracy", accuracy, hint="no label in any generation: the accuracy is 0")
    snapshot.check("counts", [n_pos, n_neg])
