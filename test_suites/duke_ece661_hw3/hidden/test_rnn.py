"""Hidden value tests of LabRNN (ECE 661 HW3 Lab (1), parts (a)-(e)).

The LSTM's parameter layout is the student's choice, so its outputs are checked against the
student's own layers (found by type), not against recorded numbers: padding must not change a
sequence's output, and the output must be fc(final hidden state) of the (last layer's) LSTM.
"""
import random

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

# -- (a) load_imdb -----------------------------------------------------------------------------


def _splits(sub, tmp_path, lab, rows=200):
    records = lab.write_imdb_csv(tmp_path / "IMDBDataset.csv", rows=rows)
    out = sub.rnn.load_imdb(str(tmp_path / "IMDBDataset.csv"))
    return records, [list(part) for part in out]


def test_split_sizes(sub, tmp_path, lab):
    _, (x_train, x_valid, x_test, *_) = _splits(sub, tmp_path, lab)
    sizes = (len(x_train), len(x_valid), len(x_test))
    assert all(abs(got - want) <= 1 for got, want in zip(sizes, (140, 20, 40))), \
        f"200 reviews split into train/valid/test sizes {sizes}; the handout asks for 7:1:2"


def test_split_disjoint_and_complete(sub, tmp_path, lab):
    records, (x_train, x_valid, x_test, *_) = _splits(sub, tmp_path, lab)
    train, valid, test = set(x_train), set(x_valid), set(x_test)
    assert not train & test, \
        f"{len(train & test)} test reviews are also in the training split (test data leaks)"
    assert not train & valid and not valid & test, "a review is in two splits"
    assert train | valid | test == {r for r, _ in records}, \
        "the splits together must contain every review of the CSV"
    assert len(x_train) + len(x_valid) + len(x_test) == len(records), "a review appears twice"


def test_split_labels_aligned_and_reproducible(sub, tmp_path, lab):
    records, first = _splits(sub, tmp_path, lab)
    label_of = dict(records)
    x_train, x_valid, x_test, y_train, y_valid, y_test = first
    for xs, ys, name in ((x_train, y_train, "train"), (x_valid, y_valid, "valid"),
                         (x_test, y_test, "test")):
        wrong = sum(label_of[x] != y for x, y in zip(xs, ys))
        assert wrong == 0, f"{wrong} labels of y_{name} do not belong to their review in x_{name}"
    random.seed(1234)  # a split must not depend on the global random state
    torch.manual_seed(1234)
    _, second = _splits(sub, tmp_path, lab)
    assert first == second, "load_imdb must split the same way every time (fix the seed)"


def test_vocab_uses_training_split_only(sub, hparams, tmp_path, lab, monkeypatch):
    """The provided harness must build the vocabulary from x_train alone."""
    lab.write_imdb_csv(tmp_path / "IMDBDataset.csv", rows=200)
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


def _vocab_corpus(lab):
    """Reviews in which each word has a known count (the test's stop words among them)."""
    counts = {"good": 6, "movie": 5, "great": 4, "plot": 3, "awful": 2, "acting": 1,
              "the": 7, "and": 5, "is": 3}
    words = [w for w, n in counts.items() for _ in range(n)]
    random.Random(0).shuffle(words)
    return [" ".join(words[i:i + 6]) for i in range(0, len(words), 6)]


@pytest.mark.parametrize("min_freq", [3, 5])
def test_vocab_words(sub, hparams, lab, snapshot, min_freq):
    hparams.STOP_WORDS = set(lab.TEST_STOP_WORDS)
    vocab = sub.rnn.build_vocab(_vocab_corpus(lab), min_freq=min_freq, hparams=hparams)
    snapshot.check("words", sorted(vocab),
                   hint="keep the words seen at least min_freq times (>=) that are not in "
                        "hparams.STOP_WORDS, plus '<pad>' and '<unk>'")
    assert vocab['<pad>'] == 0 and vocab['<unk>'] == 1
    assert sorted(vocab.values()) == list(range(len(vocab))), "ids must be 0, 1, ..., len-1"


def test_vocab_excludes_stop_words(sub, hparams, lab):
    hparams.STOP_WORDS = set(lab.TEST_STOP_WORDS)
    vocab = sub.rnn.build_vocab(_vocab_corpus(lab), min_freq=1, hparams=hparams)
    kept = sorted(w for w in vocab if w in hparams.STOP_WORDS)
    assert not kept, f"stop words must not be in the vocabulary; found {kept}"
    assert "acting" in vocab, "with min_freq=1 every non-stop word of the corpus is kept"


# -- (c) tokenize ------------------------------------------------------------------------------


VOCAB = {'<pad>': 0, '<unk>': 1, 'good': 2, 'movie': 3, 'great': 4, 'plot': 5, 'awful': 6}


def test_tokenize_known_words(sub, snapshot):
    ids = sub.rnn.tokenize(dict(VOCAB), "great plot good movie awful plot")
    snapshot.check("ids", [int(i) for i in ids], hint="one id per word, in order")


def test_tokenize_unknown_words_map_to_unk(sub, snapshot):
    ids = sub.rnn.tokenize(dict(VOCAB), "zebra movie boring plot cast")
    snapshot.check("ids", [int(i) for i in ids],
                   hint="a word missing from the vocabulary maps to vocab['<unk>']")


# -- (d) IMDB dataset --------------------------------------------------------------------------


def _item(sub, review, label="positive", max_length=256):
    item = sub.rnn.IMDB([review], [label], dict(VOCAB), max_length=max_length)[0]
    ids = [int(i) for i in torch.as_tensor(item['ids']).tolist()]
    return ids, int(item['length']), int(item['label'])


def _real_ids(ids, length):
    """ids up to length; anything after it (padding done in __getitem__) must be <pad>."""
    assert all(i == VOCAB['<pad>'] for i in ids[length:]), \
        "positions after 'length' must hold the padding index <pad> (0)"
    return ids[:length]


def test_item_ids_and_length(sub, snapshot):
    ids, length, _ = _item(sub, "good zebra movie plot")
    assert length == 4, f"'length' is {length} for a 4-word review"
    snapshot.check("ids", _real_ids(ids, length), hint="'ids' is tokenize(vocab, review)")


def test_item_truncation(sub, snapshot):
    ids, length, _ = _item(sub, "good movie great plot awful plot good", max_length=4)
    assert length == 4, f"'length' is {length}; a 7-word review with max_length=4 keeps 4 tokens"
    snapshot.check("ids", _real_ids(ids, length), hint="keep the first max_length tokens")


def test_item_labels(sub):
    labels = [_item(sub, "good movie", label)[2] for label in ("positive", "negative")]
    assert labels == [1, 0], "'positive' must become 1 and 'negative' 0"


# -- (e) LSTM ----------------------------------------------------------------------------------


def _one(model, kind):
    found = [m for m in model.modules() if isinstance(m, kind)]
    assert len(found) == 1, f"expected exactly one nn.{kind.__name__} in the model, found {len(found)}"
    return found[0]


def _model(sub, bidirectional, n_layers=1, vocab=30):
    torch.manual_seed(0)
    model = sub.rnn.LSTM(vocab_size=vocab, embedding_dim=5, hidden_dim=7, output_dim=3,
                         n_layers=n_layers, dropout_rate=0.0, pad_index=0,
                         bidirectional=bidirectional)
    return model.eval()


def _batch(lengths, vocab=30, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, vocab, (len(lengths), max(lengths)), generator=gen)
    for row, n in enumerate(lengths):
        ids[row, n:] = 0
    return ids, torch.tensor(lengths, dtype=torch.float)   # unsorted lengths, float like collate


def _expected(model, ids, length):
    """fc(final hidden state of the last layer), using the model's own layers."""
    emb, lstm, fc = _one(model, nn.Embedding), _one(model, nn.LSTM), _one(model, nn.Linear)
    x = emb(ids)                                                   # (B, L, E)
    if not lstm.batch_first:
        x = x.transpose(0, 1)                                      # (L, B, E)
    packed = pack_padded_sequence(x, length.long(), batch_first=lstm.batch_first,
                                  enforce_sorted=False)
    _, (h, _) = lstm(packed)                                       # (layers * dirs, B, H)
    if not lstm.bidirectional:
        return [fc(h[-1])]
    # Both concatenation orders are the same model up to a permutation of fc's inputs.
    return [fc(torch.cat([h[-2], h[-1]], dim=-1)), fc(torch.cat([h[-1], h[-2]], dim=-1))]


@pytest.mark.parametrize("bidirectional", [False, True])
def test_lstm_layers(sub, bidirectional):
    model = _model(sub, bidirectional, n_layers=2)
    emb, lstm, fc = _one(model, nn.Embedding), _one(model, nn.LSTM), _one(model, nn.Linear)
    assert (emb.num_embeddings, emb.embedding_dim) == (30, 5), \
        "nn.Embedding(vocab_size, embedding_dim)"
    assert (lstm.input_size, lstm.hidden_size, lstm.num_layers, lstm.bidirectional) == \
        (5, 7, 2, bidirectional), "nn.LSTM(embedding_dim, hidden_dim, n_layers, bidirectional)"
    assert (fc.in_features, fc.out_features) == (7 * (2 if bidirectional else 1), 3), \
        "fc maps the final hidden state (2 * hidden_dim when bidirectional) to output_dim"
    assert any(isinstance(m, nn.Dropout) for m in model.modules()), "add an nn.Dropout layer"


@pytest.mark.parametrize("bidirectional", [False, True])
def test_lstm_padding_does_not_change_output(sub, bidirectional):
    model = _model(sub, bidirectional)
    ids, length = _batch([3, 8, 5, 1])
    with torch.no_grad():
        batched = model(ids, length)
        for row, n in enumerate([3, 8, 5, 1]):
            alone = model(ids[row:row + 1, :n], length[row:row + 1])
            err = (batched[row] - alone[0]).abs().max().item()
            assert err < 1e-5, (
                f"the output of sequence {row} (length {n}) changes by {err:.3g} when it is "
                "padded in a batch: pack the padded batch (pack_padded_sequence with the "
                "lengths, enforce_sorted=False) so the LSTM stops at each sequence's end")


def _check_values(model, ids, length):
    with torch.no_grad():
        got = model(ids, length)
        candidates = _expected(model, ids, length)
    errors = [(got - want).abs().max().item() for want in candidates]
    return min(errors)


def test_lstm_matches_final_hidden_state(sub):
    model = _model(sub, bidirectional=False)
    ids, length = _batch([6, 2, 4])
    err = _check_values(model, ids, length)
    assert err < 1e-5, (f"output differs from fc(final hidden state) by {err:.3g}: apply fc to "
                        "the LSTM's final hidden state of each sequence (dropout off in eval)")


def test_lstm_bidirectional_concatenates_both_directions(sub):
    model = _model(sub, bidirectional=True)
    ids, length = _batch([6, 2, 4, 5])
    err = _check_values(model, ids, length)
    assert err < 1e-5, (
        f"bidirectional output differs from fc([h_forward; h_backward]) by {err:.3g}: "
        "concatenate the final hidden states of both directions (hidden[-2] and hidden[-1])")


def test_lstm_two_layers_uses_last_layer(sub):
    model = _model(sub, bidirectional=True, n_layers=2)
    ids, length = _batch([5, 3, 7])
    err = _check_values(model, ids, length)
    assert err < 1e-5, (f"with n_layers=2 the output differs by {err:.3g}: use the last layer's "
                        "hidden states (hidden[-2:] when bidirectional, hidden[-1] otherwise)")
