"""ModelSampler.get_accuracy on fixed generations (generate.py).

The continuations use the submission's own label strings (its dataloader's), so labels written
as numbers are graded as words are. get_accuracy may return the reference's 3 values or the
course starter's 4.
"""

# what the model "writes" after the prompt ({} is the label); the first few characters decide
GOOD = [" {}", "{}.", " {} review", "\n{}"]
GARBAGE = [" the the the", "", " ???", " 5 stars"]
# a label, but only after 40 characters: too late to count ("the first few characters")
LATE = [" i would say that this one is, all things considered, {}",
        " hard to tell. the acting, the plot, the music: all {}"]


def run(sub, snapshot, stub_sampler, accuracy_of, records, continuations):
    sampler, generation = stub_sampler(records, continuations)
    result = accuracy_of(sampler.get_accuracy(), len(records))
    snapshot.judge("prompts_expected", sorted(sub.dataloader.get_sentiment_prompt(r["text"]) for r in records),
                   "strings", count=len(records))
    snapshot.judge("prompts", sorted(generation.prompts), "same_text", earlier="prompts_expected",
                   what="get_accuracy must generate once for every test record, from "
                        "get_sentiment_prompt(record['text']), the prompt used in training")
    return result


def test_accuracy_correct_and_wrong(sub, snapshot, stub_sampler, accuracy_of, test_records, label_strings):
    records = test_records[:8]
    # right answers for the first five, the opposite label for the last three
    words = [GOOD[i % 4].format(label_strings[rec["label"] if i < 5 else 1 - rec["label"]])
             for i, rec in enumerate(records)]
    snapshot.check("result", run(sub, snapshot, stub_sampler, accuracy_of, records, words))


def test_garbage_counts_as_wrong(sub, snapshot, stub_sampler, accuracy_of, test_records, label_strings):
    records = test_records[:8]
    words = [GOOD[i % 4].format(label_strings[rec["label"]]) if i % 2 == 0 else GARBAGE[i // 2]
             for i, rec in enumerate(records)]
    snapshot.check("result", run(sub, snapshot, stub_sampler, accuracy_of, records, words),
                   hint="garbage is wrong, never left out of the denominator")


def test_labels_read_from_the_start_only(sub, snapshot, stub_sampler, accuracy_of, test_records, label_strings):
    records = test_records[:4]
    words = [LATE[i].format(label_strings[rec["label"]]) if i < 2 else GOOD[i].format(label_strings[rec["label"]])
             for i, rec in enumerate(records)]
    snapshot.check("result", run(sub, snapshot, stub_sampler, accuracy_of, records, words),
                   hint="look for the label in the first few characters after the prompt only, not in the "
                        "prompt and not 40 characters later")


def test_all_garbage_is_zero(sub, snapshot, stub_sampler, accuracy_of, test_records):
    records = test_records[:4]
    snapshot.check("result", run(sub, snapshot, stub_sampler, accuracy_of, records, GARBAGE),
                   hint="no label in any generation: the accuracy is 0")
