# %% [markdown]
# # ECE 661 HW3, Lab (1): LSTM for sentiment analysis on IMDB
#
# Build the data pipeline (loader, vocabulary, tokenizer, dataset) and an LSTM classifier, then
# train it for 5 epochs. The training recipe (optimizer, scheduler, weight initialization) is
# provided. **Do not change `HyperParams`.** Fill in every `TODO`; the autograder imports the
# functions and classes of this notebook, so keep their names and signatures.
#
# Put `IMDBDataset.csv` (columns `review`, `sentiment`) next to this notebook.

# %%
"""ECE 661 HW3, Lab (1): IMDB sentiment analysis with an LSTM (handout section 2 (a)-(f))."""
import copy
import random
import re
from collections import Counter

import numpy as np
import pandas as pd
import torch
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS
from sklearn.model_selection import train_test_split
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_sequence
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader, Dataset


# %%
def english_stop_words():
    """NLTK's English stop words when its data is installed, else scikit-learn's list.

    NLTK's list needs `nltk.download('stopwords')` (network); scikit-learn ships its list.
    """
    try:
        from nltk.corpus import stopwords
        return set(stopwords.words("english"))
    except (ImportError, LookupError):
        return set(ENGLISH_STOP_WORDS)


class HyperParams:
    def __init__(self):
        # Constants for the vocabulary
        self.PAD_INDEX = 0
        self.UNK_INDEX = 1
        self.PAD_TOKEN = '<pad>'
        self.UNK_TOKEN = '<unk>'
        self.STOP_WORDS = english_stop_words()
        # Data and model
        self.MAX_LENGTH = 256
        self.BATCH_SIZE = 96
        self.EMBEDDING_DIM = 1
        self.HIDDEN_DIM = 100
        self.OUTPUT_DIM = 2
        self.N_LAYERS = 1
        self.DROPOUT_RATE = 0.0
        self.LR = 0.001
        self.N_EPOCHS = 5
        self.WD = 0
        self.SEED = 12
        self.BIDIRECTIONAL = False


# %% [markdown]
# ## (a) Data loader
# Read the CSV, split it 7:1:2 into train/validation/test with a fixed seed, and return
# `x_train, x_valid, x_test, y_train, y_valid, y_test` (x: reviews, y: 'positive'/'negative').

# %%
def load_imdb(base_csv: str = './IMDBDataset.csv'):
    """Load the IMDB reviews and split them 7:1:2 (train, validation, test)."""
    # TODO: read the CSV and split it reproducibly
    # BEGIN SOLUTION
    df = pd.read_csv(base_csv)
    x, y = df['review'].to_numpy(), df['sentiment'].to_numpy()
    # 20% test first, then 1/8 of the remaining 80% (= 10% of all) for validation.
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=0.2, random_state=0)
    x_train, x_valid, y_train, y_valid = train_test_split(x_rest, y_rest, test_size=0.125,
                                                          random_state=0)
    # END SOLUTION
    print(f"shape of train data is {x_train.shape}")
    print(f"shape of test data is {x_test.shape}")
    print(f"shape of valid data is {x_valid.shape}")
    return x_train, x_valid, x_test, y_train, y_valid, y_test


# %% [markdown]
# ## (b) Vocabulary
# Count the words of the training reviews, leave out `STOP_WORDS`, keep the words seen at least
# `min_freq` times. Ids start at 2: 0 is `<pad>`, 1 is `<unk>`.

# %%
def split_words(text: str) -> list:
    """Lower-cased words of a review; the `<br />` line breaks of IMDB are separators."""
    return re.findall(r"[a-z0-9']+", text.lower().replace("<br />", " "))


def build_vocab(x_train: list, min_freq: int = 5, hparams=None) -> dict:
    """Map each frequent training word (not a stop word) to an id; PAD=0, UNK=1."""
    hparams = hparams if hparams is not None else HyperParams()
    # TODO: count the words of x_train that are not stop words, in `corpus`
    # BEGIN SOLUTION
    corpus = Counter(word for review in x_train for word in split_words(review)
                     if word not in hparams.STOP_WORDS)
    # END SOLUTION
    # Words seen at least min_freq times, most frequent first.
    corpus_ = [word for word in sorted(corpus, key=corpus.get, reverse=True)
               if corpus[word] >= min_freq]
    vocab = {w: i + 2 for i, w in enumerate(corpus_)}
    vocab[hparams.PAD_TOKEN] = hparams.PAD_INDEX
    vocab[hparams.UNK_TOKEN] = hparams.UNK_INDEX
    return vocab


# %% [markdown]
# ## (c) Tokenization
# Return the vocabulary index of each word of `example`; unknown words map to `<unk>`.

# %%
def tokenize(vocab: dict, example: str) -> list:
    """Token ids of the words of `example` (unknown words -> the `<unk>` id)."""
    # TODO: look up each word; words missing from vocab become vocab['<unk>']
    # BEGIN SOLUTION
    unk = vocab['<unk>']
    return [vocab.get(word, unk) for word in split_words(example)]
    # END SOLUTION


# %% [markdown]
# ## (d) Dataset
# `__getitem__(i)` returns `{'ids': token ids truncated to max_length, 'length': len(ids),
# 'label': 1 for 'positive', 0 for 'negative'}`.

# %%
class IMDB(Dataset):
    def __init__(self, x, y, vocab, max_length=256) -> None:
        self.x = x
        self.y = y
        self.vocab = vocab
        self.max_length = max_length

    def __getitem__(self, idx: int):
        """The idx-th review as token ids (at most max_length), its length and its label."""
        # TODO: tokenize, truncate and convert the label
        # BEGIN SOLUTION
        ids = tokenize(self.vocab, self.x[idx])[:self.max_length]
        label = 1 if self.y[idx] == 'positive' else 0
        return {'ids': ids, 'length': len(ids), 'label': label}
        # END SOLUTION

    def __len__(self) -> int:
        return len(self.x)


def collate(batch, pad_index):
    """Pad a list of examples into a batch: ids (B, L) long, length (B,) float, label (B,)."""
    batch_ids = [torch.LongTensor(example['ids']) for example in batch]
    batch_ids = pad_sequence(batch_ids, padding_value=pad_index, batch_first=True)
    batch_length = torch.Tensor([example['length'] for example in batch])
    batch_label = torch.LongTensor([example['label'] for example in batch])
    return {'ids': batch_ids, 'length': batch_length, 'label': batch_label}


collate_fn = collate


# %% [markdown]
# ## (e) The LSTM model
# `__init__`: an embedding layer, an LSTM, a dropout layer and a linear layer.
# `forward(ids (B, L), length (B,))`: decide where to apply dropout. The sequences in the batch
# have different lengths: they come padded to the same length (packing them as well lets the LSTM
# stop at each sequence's end). Apply the fc layer to the output of the LSTM and return
# `(B, output_dim)` logits.

# %%
def init_weights(m):
    """Xavier for embeddings and linear layers, orthogonal for recurrent weights, zero biases."""
    if isinstance(m, nn.Embedding):
        nn.init.xavier_normal_(m.weight)
    elif isinstance(m, nn.Linear):
        nn.init.xavier_normal_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.LSTM, nn.GRU)):
        for name, param in m.named_parameters():
            if 'bias' in name:
                nn.init.zeros_(param)
            elif 'weight' in name:
                nn.init.orthogonal_(param)


class LSTM(nn.Module):
    def __init__(self, vocab_size: int, embedding_dim: int, hidden_dim: int, output_dim: int,
                 n_layers: int, dropout_rate: float, pad_index: int, bidirectional: bool,
                 **kwargs):
        """An embedding, an (optionally bidirectional, stacked) LSTM, dropout and an fc layer."""
        super().__init__()
        # TODO: create the embedding, LSTM, dropout and fc layers
        # BEGIN SOLUTION
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_index)
        # nn.LSTM only applies dropout between stacked layers; it warns if there is just one.
        self.lstm = nn.LSTM(embedding_dim, hidden_dim, num_layers=n_layers, batch_first=True,
                            bidirectional=bidirectional,
                            dropout=dropout_rate if n_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout_rate)
        self.fc = nn.Linear(hidden_dim * (2 if bidirectional else 1), output_dim)
        # END SOLUTION
        # Weight initialization. DO NOT CHANGE!
        self.apply(kwargs.get("weight_init_fn", init_weights))

    def forward(self, ids: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        """ids (B, L) padded token ids, length (B,) true lengths -> logits (B, output_dim)."""
        # TODO: embed, pack, run the LSTM, take the final hidden state, apply fc
        # BEGIN SOLUTION
        embedded = self.dropout(self.embedding(ids))                   # (B, L, E)
        # Packing makes the LSTM stop at each sequence's own end instead of running over padding.
        packed = pack_padded_sequence(embedded, length.long().cpu(), batch_first=True,
                                      enforce_sorted=False)
        _, (hidden, _) = self.lstm(packed)                             # (n_layers * n_dir, B, H)
        if self.lstm.bidirectional:
            # Last layer: hidden[-2] is the forward direction, hidden[-1] the backward one.
            hidden = torch.cat([hidden[-2], hidden[-1]], dim=-1)       # (B, 2H)
        else:
            hidden = hidden[-1]                                        # (B, H)
        return self.fc(self.dropout(hidden))                           # (B, output_dim)
        # END SOLUTION


# %% [markdown]
# ## Training recipe (provided)

# %%
def count_parameters(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def get_accuracy(prediction, label):
    """Fraction of the batch whose arg-max class equals the label."""
    predicted_classes = prediction.argmax(dim=-1)
    return predicted_classes.eq(label).sum().item() / prediction.shape[0]


def train(dataloader, model, criterion, optimizer, scheduler, device):
    """One epoch of training; per-batch losses and accuracies."""
    model.train()
    epoch_losses, epoch_accs = [], []
    for batch in dataloader:
        ids, length, label = (batch[k].to(device) for k in ('ids', 'length', 'label'))
        prediction = model(ids, length)
        loss = criterion(prediction, label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        epoch_losses.append(loss.item())
        epoch_accs.append(get_accuracy(prediction, label))
    return epoch_losses, epoch_accs


@torch.no_grad()
def evaluate(dataloader, model, criterion, device):
    """Per-batch losses and accuracies, without updating the model."""
    model.eval()
    epoch_losses, epoch_accs = [], []
    for batch in dataloader:
        ids, length, label = (batch[k].to(device) for k in ('ids', 'length', 'label'))
        prediction = model(ids, length)
        epoch_losses.append(criterion(prediction, label).item())
        epoch_accs.append(get_accuracy(prediction, label))
    return epoch_losses, epoch_accs


@torch.no_grad()
def predict_sentiment(text, model, vocab, device):
    """(predicted class, its probability) for one review."""
    model.eval()
    ids = torch.LongTensor(tokenize(vocab, text)).unsqueeze(0).to(device)   # (1, L)
    length = torch.Tensor([ids.shape[1]])
    probability = torch.softmax(model(ids, length).squeeze(0), dim=-1)
    predicted_class = probability.argmax().item()
    return predicted_class, probability[predicted_class].item()


class ConstantWithWarmup(LRScheduler):
    """Linear warm-up of the learning rate over num_warmup_steps, then constant."""

    def __init__(self, optimizer, num_warmup_steps: int):
        self.num_warmup_steps = num_warmup_steps
        super().__init__(optimizer)

    def get_lr(self):
        scale = min(1.0, (self.last_epoch + 1) / max(1, self.num_warmup_steps))
        return [base_lr * scale for base_lr in self.base_lrs]


def train_and_test_model_with_hparams(hparams, model_type="lstm", **kwargs):
    """Train for hparams.N_EPOCHS, keep the best validation model, evaluate it on the test set."""
    random.seed(hparams.SEED)
    np.random.seed(hparams.SEED)
    torch.manual_seed(hparams.SEED)
    torch.backends.cudnn.deterministic = True

    x_train, x_valid, x_test, y_train, y_valid, y_test = load_imdb()
    vocab = build_vocab(x_train, hparams=hparams)
    vocab_size = len(vocab)
    pad_index = hparams.PAD_INDEX

    def loader(x, y, shuffle):
        return DataLoader(IMDB(x, y, vocab, hparams.MAX_LENGTH), batch_size=hparams.BATCH_SIZE,
                          shuffle=shuffle, collate_fn=lambda b: collate(b, pad_index))

    train_dataloader = loader(x_train, y_train, shuffle=True)
    valid_dataloader = loader(x_valid, y_valid, shuffle=False)
    test_dataloader = loader(x_test, y_test, shuffle=False)

    model = LSTM(vocab_size, hparams.EMBEDDING_DIM, hparams.HIDDEN_DIM, hparams.OUTPUT_DIM,
                 hparams.N_LAYERS, hparams.DROPOUT_RATE, pad_index, hparams.BIDIRECTIONAL,
                 **kwargs)
    num_params = count_parameters(model)
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    criterion = nn.CrossEntropyLoss().to(device)
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=hparams.LR, weight_decay=hparams.WD,
                                 eps=1e-6)
    scheduler = ConstantWithWarmup(optimizer, num_warmup_steps=200)

    best_valid_loss = float('inf')
    best_state, history = None, []
    # TODO: for each epoch, train, evaluate on the validation set and keep the model with the
    # lowest validation loss; record the mean losses and accuracies of each epoch in `history`.
    # Then reload the best model and evaluate it on the test set (test_loss, test_acc).
    # BEGIN SOLUTION
    for epoch in range(hparams.N_EPOCHS):
        train_loss, train_acc = train(train_dataloader, model, criterion, optimizer, scheduler,
                                      device)
        valid_loss, valid_acc = evaluate(valid_dataloader, model, criterion, device)
        history.append({'epoch': epoch + 1, 'train_loss': float(np.mean(train_loss)),
                        'train_acc': float(np.mean(train_acc)),
                        'valid_loss': float(np.mean(valid_loss)),
                        'valid_acc': float(np.mean(valid_acc))})
        if history[-1]['valid_loss'] < best_valid_loss:
            best_valid_loss = history[-1]['valid_loss']
            best_state = copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    test_loss, test_acc = evaluate(test_dataloader, model, criterion, device)
    test_loss, test_acc = float(np.mean(test_loss)), float(np.mean(test_acc))
    # END SOLUTION
    return {'num_params': num_params, 'test_loss': test_loss, 'test_acc': test_acc,
            'history': history}


# %% [markdown]
# ## (f) Train for 5 epochs with the default configuration
# Report the training and validation loss per epoch, and the predictions on the first test reviews.

# %%
if __name__ == "__main__":
    results = train_and_test_model_with_hparams(HyperParams(), "lstm")
    for row in results['history']:
        print(row)
    print(f"test loss {results['test_loss']:.3f}, test acc {results['test_acc']:.3f}")
