"""Hidden tests of LabRNN (ECE 661 HW3 Lab (1), parts (a)-(e)).

Each test sends its observations to the grading parent, which decides (values checked against
the reference's recording, or rules of judges.py); an assert only explains a failure.

The LSTM is built with the test's `weight_init_fn` (the starter's `self.apply(...)` takes it),
so its weights depend on the layers' types and shapes only. The handout asks to pad the
sequences, not to pack them: an output equal to fc(final hidden state) of the packed batch or
of the padded batch is accepted, and only the configuration the handout uses (one layer, one
direction) is graded.
"""
import random

import numpy as np
import pytest
import torch
from torch import nn

from grader.seeding import seed_everything

# -- (a) load_imdb -----------------------------------------------------------------------------

ROWS = 200


def _observe_split(sub, tmp_path, lab):
    """load_imdb on the first ROWS reviews, as CSV row numbers and label strings."""
    records = lab.write_imdb_csv(tmp_path / "IMDBDataset.csv", rows=ROWS)
    out = sub.rnn.load_imdb(str(tmp_path / "IMDBDataset.csv"))
    lab.expect(isinstance(out, tuple) and len(out) == 6,
               "load_imdb must return x_train, x_valid, x_test, y_train, y_valid, y_test")
    row_of = {review: i for i, (review, _) in enumerate(records)}
    parts = [list(part) for part in out]
    rows = [np.array([row_of.get(x, -1) if isinstance(x, str) else -1 for x in xs], dtype=np.int64)
            for xs in parts[:3]]
    labels = [[str(y) for y in ys] for ys in parts[3:]]
    return {"parts": len(out), "rows": rows, "labels": labels}, [label for _, label in records]


def _judge_split(snapshot, obs, truth, aspects, hint):
    snapshot.judge("split", obs, "imdb_split", n=ROWS, truth=truth, aspects=aspects, hint=hint)


def test_split_sizes(sub, tmp_path, lab, snapshot):
    obs, truth = _observe_split(sub, tmp_path, lab)
    _judge_split(snapshot, obs, truth, ["sizes"], "train 70%, validation 10%, test 20%")


def test_split_disjoint_and_complete(sub, tmp_path, lab, snapshot):
    obs, truth = _observe_split(sub, tmp_path, lab)
    _judge_split(snapshot, obs, truth, ["partition"],
                 "split the test set off first, then split the rest into train and validation")


def _flat(obs):
    sizes = [len(r) for r in obs["rows"]]
    return np.concatenate([np.array(sizes, dtype=np.int64)] + obs["rows"])


def _harness_seed(seed=12):
    """What the provided harness does before it calls load_imdb (HyperParams.SEED)."""
    seed_everything(seed)


def test_split_labels_aligned_and_reproducible(sub, tmp_path, lab, snapshot):
    _harness_seed()
    obs, truth = _observe_split(sub, tmp_path, lab)
    _judge_split(snapshot, obs, truth, ["labels"], "split x and y together")
    snapshot.judge("split_rows", _flat(obs), "shape", shape=[3 + ROWS])
    _harness_seed()  # the harness seeds random, numpy and torch: the split must follow them
    again, _ = _observe_split(sub, tmp_path, lab)
    snapshot.judge("split_rows_again", _flat(again), "same_as_earlier", other="split_rows",
                   what="two runs of the harness (same seeds)",
                   hint="with the harness's seeds set, load_imdb must split the same way")


def test_vocab_uses_training_split_only(sub, hparams, tmp_path, lab, monkeypatch, snapshot):
    """The provided harness builds the vocabulary from x_train alone (checked, not graded:
    that line is given in the starter)."""
    lab.write_imdb_csv(tmp_path / "IMDBDataset.csv", rows=ROWS)
    monkeypatch.chdir(tmp_path)
    seen = []

    class Stop(Exception):
        pass

    def spy(x_train, *args, **kwargs):
        seen.append(list(x_train))
        raise Stop

    # The harness looks build_vocab up in its module's globals: replace it there.
    harness = sub.rnn.train_and_test_model_with_hparams
    monkeypatch.setitem(harness.__globals__, "build_vocab", spy)
    with pytest.raises(Stop):
        harness(hparams, "lstm")
    x_train = list(sub.rnn.load_imdb()[0])
    assert seen[0] == x_train, \
        "the vocabulary must be built from the training reviews only (not valid/test ones)"


# -- (b) build_vocab ---------------------------------------------------------------------------


def _corpus(counts, seed=0, width=6):
    """Reviews in which each word has a known count, in shuffled order."""
    words = [w for w, n in counts.items() for _ in range(n)]
    random.Random(seed).shuffle(words)
    return [" ".join(words[i:i + width]) for i in range(0, len(words), width)]


VOCAB_COUNTS = {"good": 6, "movie": 5, "great": 4, "plot": 3, "awful": 2, "acting": 1,
                "the": 7, "and": 5, "is": 3}


@pytest.mark.parametrize("min_freq", [3, 5])
def test_vocab_words(sub, hparams, lab, snapshot, min_freq):
    hparams.STOP_WORDS = set(lab.TEST_STOP_WORDS)
    vocab = sub.rnn.build_vocab(_corpus(VOCAB_COUNTS), min_freq=min_freq, hparams=hparams)
    snapshot.check("words", sorted(vocab),
                   hint="keep the words seen at least min_freq times (>=) that are not in "
                        "hparams.STOP_WORDS, plus '<pad>' and '<unk>'")


def test_vocab_excludes_stop_words(sub, hparams, lab, snapshot):
    hparams.STOP_WORDS = set(lab.TEST_STOP_WORDS)
    vocab = sub.rnn.build_vocab(_corpus(VOCAB_COUNTS, seed=1), min_freq=1, hparams=hparams)
    snapshot.check("words", sorted(vocab),
                   hint="every word of the corpus that is not in hparams.STOP_WORDS (min_freq=1)")


# The same words in several spellings: "Good" and "GOOD" are the word "good", "The" is the stop
# word "the".
MIXED_CASE_COUNTS = {"Good": 2, "good": 2, "GOOD": 2, "Movie": 3, "movie": 2, "Great": 4,
                     "The": 4, "the": 3, "AND": 5, "Plot": 5}


def test_vocab_ignores_case(sub, hparams, lab, snapshot):
    hparams.STOP_WORDS = set(lab.TEST_STOP_WORDS)
    vocab = sub.rnn.build_vocab(_corpus(MIXED_CASE_COUNTS, seed=2), min_freq=5, hparams=hparams)
    snapshot.check("words", sorted(vocab),
                   hint="count words case-insensitively (lower-case them): 'Good' and 'good' "
                        "are one word, and 'The' is the stop word 'the'")


# -- (c) tokenize ------------------------------------------------------------------------------


VOCAB = {'<pad>': 0, '<unk>': 1, 'good': 2, 'movie': 3, 'great': 4, 'plot': 5, 'awful': 6}


def _ids(sub, text):
    ids = sub.rnn.tokenize(dict(VOCAB), text)
    if not isinstance(ids, (list, tuple, torch.Tensor, np.ndarray)):
        pytest.fail(f"tokenize must return a list of token ids, got {type(ids).__name__}",
                    pytrace=False)
    return [int(i) for i in ids]


def test_tokenize_known_words(sub, snapshot):
    snapshot.check("ids", _ids(sub, "great plot good movie awful plot"),
                   hint="one id per word, in order")


def test_tokenize_unknown_words_map_to_unk(sub, snapshot):
    snapshot.check("ids", _ids(sub, "zebra movie boring plot cast"),
                   hint="a word missing from the vocabulary maps to vocab['<unk>']")


def test_tokenize_ignores_case(sub, snapshot):
    snapshot.check("ids", _ids(sub, "Great PLOT good Movie AWFUL"),
                   hint="the vocabulary holds lower-case words: lower-case the text first")


# -- (d) IMDB dataset --------------------------------------------------------------------------


def _item(sub, review, label="positive", max_length=256):
    item = sub.rnn.IMDB([review], [label], dict(VOCAB), max_length=max_length)[0]
    if not isinstance(item, dict):
        pytest.fail(f"__getitem__ must return a dict, got {type(item).__name__}", pytrace=False)
    ids = [int(i) for i in torch.as_tensor(item['ids']).reshape(-1).tolist()]
    return ids, int(item['length']), int(item['label'])


def _send_ids(snapshot, ids, length, hint):
    """The ids up to 'length', and what follows them (padding done in __getitem__ must be
    the <pad> index)."""
    snapshot.check("ids", ids[:length], hint=hint)
    snapshot.judge("ids_after_length", np.array(ids[length:], dtype=np.float64), "bounds",
                   low=0, high=0, hint="positions after 'length' may only hold <pad> (0)")


def test_item_ids_and_length(sub, snapshot):
    ids, length, _ = _item(sub, "good zebra movie plot")
    snapshot.check("length", length, hint="'length' is the number of token ids")
    _send_ids(snapshot, ids, length, "'ids' is tokenize(vocab, review)")


def test_item_truncation(sub, snapshot):
    ids, length, _ = _item(sub, "good movie great plot awful plot good", max_length=4)
    snapshot.check("length", length, hint="a review longer than max_length keeps max_length tokens")
    _send_ids(snapshot, ids, length, "keep the first max_length tokens")


def test_item_labels(sub, snapshot):
    labels = [_item(sub, "good movie", label)[2] for label in ("positive", "negative")]
    snapshot.check("labels", labels, hint="'positive' becomes 1 and 'negative' 0")


# -- (e) LSTM ----------------------------------------------------------------------------------

SIZES = {"vocab_size": 30, "embedding_dim": 5, "hidden_dim": 7, "output_dim": 3}


def _model(sub, lab, dropout_rate=0.0, **sizes):
    sizes = {**SIZES, **sizes}
    model = sub.rnn.LSTM(n_layers=1, dropout_rate=dropout_rate, pad_index=0, bidirectional=False,
                         weight_init_fn=lab.fixed_init, **sizes)
    return model


def _structure(model):
    """The sizes of the model's layers, by type."""
    def of(kind):
        return [m for m in model.modules() if isinstance(m, kind)]
    return {
        "embedding": [[m.num_embeddings, m.embedding_dim] for m in of(nn.Embedding)],
        "lstm": [[m.input_size, m.hidden_size] for m in of(nn.LSTM)],
        "fc": [[m.in_features, m.out_features] for m in of(nn.Linear)],
        "dropout": sorted({float(m.p) for m in of(nn.Dropout)}),
    }


@pytest.mark.parametrize("sizes", [
    {"vocab_size": 30, "embedding_dim": 5, "hidden_dim": 7, "output_dim": 3, "dropout_rate": 0.3},
    {"vocab_size": 52, "embedding_dim": 4, "hidden_dim": 9, "output_dim": 2, "dropout_rate": 0.5},
], ids=["small", "other"])
def test_lstm_layers(sub, lab, snapshot, sizes):
    model = _model(sub, lab, **sizes)
    snapshot.check("layers", _structure(model),
                   hint="nn.Embedding(vocab_size, embedding_dim), nn.LSTM(embedding_dim, "
                        "hidden_dim), nn.Linear(hidden_dim, output_dim) and "
                        "nn.Dropout(dropout_rate), each made from the arguments")


def _send_forms(snapshot, lab, ids, length, forms=("packed", "padded"), prefix="form"):
    layers = lab.lstm_layers(**SIZES)
    with torch.no_grad():
        for name in forms:
            snapshot.check(f"{prefix}_{name}", lab.lstm_forward(layers, ids, length, **lab.LSTM_FORMS[name]))
    return [f"{prefix}_{name}" for name in forms]


FORMS_TEXT = "fc applied to the LSTM's final hidden state, the batch packed or only padded"


def test_lstm_forward_values(sub, lab, snapshot):
    ids, length = lab.lstm_batch([6, 2, 4, 7, 1])
    keys = _send_forms(snapshot, lab, ids, length)
    model = _model(sub, lab).eval()
    with torch.no_grad():
        out = model(ids, length)
    snapshot.judge("logits", out, "one_of", keys=keys, what="the LSTM's output",
                   forms=FORMS_TEXT, hint="the output is (batch size, output_dim) logits")


def test_lstm_applies_dropout(sub, lab, snapshot):
    """The handout: "decide where to apply dropout". In training mode with dropout_rate=0.5 the
    output must change; in evaluation mode it is the plain forward."""
    ids, length = lab.lstm_batch([5, 3, 7, 6])
    keys = _send_forms(snapshot, lab, ids, length)
    model = _model(sub, lab, dropout_rate=0.5)
    with torch.no_grad():
        model.eval()
        snapshot.judge("eval_logits", model(ids, length), "one_of", keys=keys,
                       what="the output in evaluation mode", forms=FORMS_TEXT)
        model.train()
        torch.manual_seed(0)
        train_out = model(ids, length)
    snapshot.judge("train_logits", train_out, "differs_from_earlier", other="eval_logits",
                   atol=1e-6,
                   what="with dropout_rate=0.5 the output in training mode equals the output in "
                        "evaluation mode: apply the nn.Dropout layer in forward")


STEPS = 4


def _train_losses(forward, parameters, ids, length, label):
    """Losses of STEPS plain SGD steps on one batch."""
    opt = torch.optim.SGD(parameters, lr=0.5)
    losses = []
    for _ in range(STEPS):
        loss = nn.functional.cross_entropy(forward(ids, length), label)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return torch.tensor(losses)


TRAINED_FORMS = {"packed": (True, None), "padded": (False, None), "padded_idx": (False, 0)}


def test_lstm_trains(sub, lab, snapshot):
    """Every layer made in __init__ is a registered, trained parameter: the losses of a few SGD
    steps match the test's own layers trained the same way (packed; padded, with or without
    the embedding's padding_idx, which keeps the <pad> row fixed)."""
    ids, length = lab.lstm_batch([6, 3, 5, 2], seed=1)
    label = torch.tensor([0, 2, 1, 0])
    for name, (packed, padding_idx) in TRAINED_FORMS.items():
        layers = lab.lstm_layers(**SIZES, padding_idx=padding_idx)
        losses = _train_losses(lambda i, n, layers=layers, packed=packed:
                               lab.lstm_forward(layers, i, n, packed),
                               layers.parameters(), ids, length, label)
        snapshot.check(f"losses_{name}", losses)
    model = _model(sub, lab).train()
    snapshot.judge("losses", _train_losses(model, model.parameters(), ids, length, label),
                   "one_of", keys=[f"losses_{name}" for name in TRAINED_FORMS], rtol=1e-4,
                   atol=1e-5, what="the losses of 4 SGD steps",
                   forms=FORMS_TEXT + ", every layer trained",
                   hint="create the layers as attributes in __init__ so that they are trained")
