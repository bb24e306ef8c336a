"""Public checks of LabRNN (ECE 661 HW3 Lab (1)): return types and shapes, one per part."""
import random

import numpy as np
import torch


def test_hyperparams_unchanged(hparams):
    """The handout forbids changing HyperParams (checked, not graded). The learning rate is the
    one value the real starters differ in: 0.001 (Fall 2025, Adam) and 0.01 (Spring 2024, SGD)."""
    fixed = {"PAD_INDEX": 0, "UNK_INDEX": 1, "PAD_TOKEN": '<pad>', "UNK_TOKEN": '<unk>',
             "MAX_LENGTH": 256, "BATCH_SIZE": 96, "EMBEDDING_DIM": 1, "HIDDEN_DIM": 100,
             "OUTPUT_DIM": 2, "N_LAYERS": 1, "DROPOUT_RATE": 0.0, "LR": (0.001, 0.01),
             "N_EPOCHS": 5, "WD": 0, "SEED": 12, "BIDIRECTIONAL": False}
    fixed = {k: v if isinstance(v, tuple) else (v,) for k, v in fixed.items()}
    changed = [f"{k}={getattr(hparams, k, None)!r} (the starter has "
               f"{' or '.join(repr(x) for x in v)})"
               for k, v in fixed.items() if getattr(hparams, k, None) not in v]
    assert not changed, "HyperParams must not be changed: " + ", ".join(changed)
    assert len(hparams.STOP_WORDS) > 100 and 'the' in hparams.STOP_WORDS


def test_load_imdb_returns_six_splits(sub, tmp_path, lab, snapshot):
    records = lab.write_imdb_csv(tmp_path / "IMDBDataset.csv", rows=100)
    out = sub.rnn.load_imdb(str(tmp_path / "IMDBDataset.csv"))
    lab.expect(isinstance(out, tuple) and len(out) == 6,
               "load_imdb must return x_train, x_valid, x_test, y_train, y_valid, y_test")
    row_of = {review: i for i, (review, _) in enumerate(records)}
    parts = [list(part) for part in out]
    rows = [np.array([row_of.get(x, -1) if isinstance(x, str) else -1 for x in xs], dtype=np.int64)
            for xs in parts[:3]]
    labels = [[str(y) for y in ys] for ys in parts[3:]]
    snapshot.judge("split", {"parts": len(out), "rows": rows, "labels": labels}, "imdb_split",
                   n=100, truth=[label for _, label in records], aspects=[],
                   hint="x holds the review texts, y the 'positive'/'negative' labels")


def test_build_vocab_counts_words(sub, hparams, lab, snapshot):
    reviews = [" ".join(lab.CONTENT_WORDS[:6])] * 5 + [" ".join(lab.CONTENT_WORDS[6:9])] * 4
    vocab = sub.rnn.build_vocab(reviews, min_freq=5, hparams=hparams)
    lab.expect(isinstance(vocab, dict), f"build_vocab must return a dict word -> id, got "
               f"{type(vocab).__name__}")
    snapshot.check("words", sorted(vocab),
                   hint="the words seen at least min_freq=5 times, plus '<pad>' and '<unk>'")


def test_tokenize_returns_ids(sub, lab, snapshot):
    vocab = {'<pad>': 0, '<unk>': 1, 'good': 2, 'movie': 3}
    ids = sub.rnn.tokenize(vocab, "good movie")
    lab.expect(isinstance(ids, (list, tuple, torch.Tensor)),
               f"tokenize must return a list of token ids, got {type(ids).__name__}")
    snapshot.check("ids", [int(i) for i in ids], hint="tokenize(vocab, 'good movie') with "
                   "good->2, movie->3")


def test_imdb_item_keys(sub, lab, snapshot):
    vocab = {'<pad>': 0, '<unk>': 1, 'good': 2, 'movie': 3}
    item = sub.rnn.IMDB(["good movie"], ["positive"], vocab, max_length=256)[0]
    lab.expect(isinstance(item, dict) and {'ids', 'length', 'label'} <= set(item),
               "__getitem__ must return a dict with keys 'ids', 'length' and 'label'")
    ids = [int(i) for i in torch.as_tensor(item['ids']).reshape(-1).tolist()]
    snapshot.check("item", {"ids": ids[:int(item['length'])], "length": int(item['length']),
                            "label": int(item['label'])})


def test_lstm_output_shape(sub, lab, snapshot):
    """A batch of full-length sequences (no padding): packing or not gives the same output."""
    model = sub.rnn.LSTM(vocab_size=30, embedding_dim=4, hidden_dim=8, output_dim=2, n_layers=1,
                         dropout_rate=0.0, pad_index=0, bidirectional=False,
                         weight_init_fn=lab.fixed_init).eval()
    ids = torch.randint(2, 30, (3, 7))
    length = torch.tensor([7.0, 7.0, 7.0])   # float, as the provided collate makes it
    with torch.no_grad():
        out = model(ids, length)
    lab.expect(isinstance(out, torch.Tensor) and tuple(out.shape) == (3, 2),
               "forward must return (batch size, output_dim) = (3, 2) logits")
    snapshot.check("logits", out, hint="fc applied to the LSTM's final hidden state")


def test_train_and_test_runs(sub, hparams, tmp_path, lab, monkeypatch):
    """The whole harness on 300 reviews for one short epoch (checked, not graded)."""
    lab.write_imdb_csv(tmp_path / "IMDBDataset.csv", rows=300)
    monkeypatch.chdir(tmp_path)   # load_imdb() reads ./IMDBDataset.csv
    hparams.N_EPOCHS, hparams.MAX_LENGTH, hparams.HIDDEN_DIM = 1, 32, 16
    random.seed(0)
    results = sub.rnn.train_and_test_model_with_hparams(hparams, "lstm")
    assert {'num_params', 'test_loss', 'test_acc'} <= set(results), \
        "train_and_test_model_with_hparams must return num_params, test_loss and test_acc"
    assert 0.0 <= float(results['test_acc']) <= 1.0
