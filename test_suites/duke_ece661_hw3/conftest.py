"""Shared fixtures of the Duke ECE 661 HW3 suite (LabRNN: IMDB LSTM; LabLLM: GPT-2).

Nothing here downloads: the IMDB reviews, WikiText lines and the GPT-2 stand-in come from
`fixtures/duke_ece661_hw3/` (see tools/duke_ece661_hw3/). The course's `HyperParams` reads
NLTK's stop words, whose data needs a download; where that data is missing, `hparams` serves
scikit-learn's list under the same call, so a starter-based submission still imports and runs.
Tests that depend on the stop words pass their own set. Helpers and shared word lists reach the
tests through the `lab` fixture.

Every graded test earns its points from what it sends (`snapshot.check` / `snapshot.judge`,
rules in `judges.py`); an `assert` here or in a test only explains a failure to the student.

Two forms of LabLLM are graded. lmgrade's notebook defines `prepare_dataset`, `build_trainer`,
`loss_history` and `apply_lora`; the course's Spring 2025 notebook (course-apis.md §4(c)) has a
`tokenize_function(examples)` that reads a global `tokenizer`, and builds `TrainingArguments`
and a peft `LoraConfig` in top-level cells. The helpers below use lmgrade's functions when the
submission defines them, and the course's objects otherwise.
"""
import ast
import contextlib
import copy
import csv
import dataclasses
import io
import sys
import zlib
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

# Words that are stop words in neither NLTK's nor scikit-learn's English list.
CONTENT_WORDS = ["good", "movie", "great", "plot", "awful", "acting", "zebra", "boring", "cast",
                 "scene", "story", "music", "actor", "ending", "script"]
TEST_STOP_WORDS = {"the", "a", "and", "is", "of", "it", "this", "was"}
EOS_TEXT = "<|endoftext|>"


@pytest.fixture
def hparams(sub):
    """The submission's HyperParams(), with NLTK's stop-word list stubbed if its data is absent."""
    stopwords = _nltk_stopwords_loader()
    patched = False
    if stopwords is not None:
        try:
            stopwords.words("english")
        except LookupError:
            from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

            # LazyCorpusLoader resolves missing attributes by loading; an instance attribute
            # shadows that, and is removed again after the test.
            stopwords.__dict__["words"] = lambda *args, **kwargs: sorted(ENGLISH_STOP_WORDS)
            patched = True
    try:
        yield sub.rnn.HyperParams()
    finally:
        if patched:
            del stopwords.__dict__["words"]


def _nltk_stopwords_loader():
    try:
        from nltk.corpus import stopwords
    except ImportError:
        return None
    return stopwords


def write_imdb_csv(fixtures, path, rows: int):
    """The first `rows` reviews of the fixture IMDBDataset.csv, in the same format."""
    with open(fixtures / "IMDBDataset.csv", newline="", encoding="utf-8") as f:
        records = list(csv.reader(f))[: rows + 1]
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(records)
    return records[1:]


def expect(condition, message: str) -> None:
    """A well-formedness check: fail with `message` alone (no assertion rewriting)."""
    if not condition:
        pytest.fail(message, pytrace=False)


def optional(module, name):
    """`module.name`, or None when the submission does not define it (another accepted form)."""
    try:
        return getattr(module, name)
    except pytest.fail.Exception:
        return None


def module_objects(module, kind):
    """The objects of type `kind` a submission builds in its top-level cells, in notebook order.

    A notebook may rebind one name (the course's `training_args` for full fine-tuning, then again
    for LoRA), so the module's namespace holds only the last; each top-level `name = kind(...)`
    of the module's source is evaluated again, in the module's namespace, to recover them all."""
    mod = sys.modules[module.__name__]
    namespace = vars(mod)
    found = []
    try:
        tree = ast.parse(Path(mod.__file__).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, TypeError):
        tree = ast.Module(body=[], type_ignores=[])
    for node in tree.body:
        value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
        if isinstance(value, ast.Call) and _call_name(value) == kind.__name__:
            # the submission's own expression, evaluated as its import evaluated it
            obj = eval(compile(ast.Expression(value), mod.__file__, "eval"), namespace)
            if isinstance(obj, kind):
                found.append(obj)
    return found or [v for v in namespace.values() if isinstance(v, kind)]


def _call_name(call: ast.Call) -> str | None:
    func = call.func
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)


# -- LabRNN: the LSTM ----------------------------------------------------------------------------


def fixed_init(module: nn.Module) -> None:
    """A `weight_init_fn` for the LSTM's provided `self.apply(...)`: every parameter gets values
    that depend only on its layer type, name and shape, so the student's layers and the test's
    own hold the same weights whatever order they were created in."""
    scale = {"Embedding": 1.0, "LSTM": 0.4, "Linear": 0.5}.get(type(module).__name__, 0.3)
    for name, param in module.named_parameters(recurse=False):
        tag = f"{type(module).__name__}.{name}.{tuple(param.shape)}"
        gen = torch.Generator().manual_seed(zlib.crc32(tag.encode()))
        with torch.no_grad():
            param.copy_((torch.rand(param.shape, generator=gen) * 2 - 1) * scale)


def lstm_layers(vocab_size, embedding_dim, hidden_dim, output_dim, padding_idx=None):
    """The test's own embedding, LSTM and fc layers, with `fixed_init` weights."""
    layers = nn.ModuleDict({
        "embedding": nn.Embedding(vocab_size, embedding_dim, padding_idx=padding_idx),
        "lstm": nn.LSTM(embedding_dim, hidden_dim, batch_first=True),
        "fc": nn.Linear(hidden_dim, output_dim),
    })
    layers.apply(fixed_init)
    return layers


def lstm_forward(layers, ids, length, packed: bool):
    """fc(final hidden state): packed (the LSTM stops at each sequence's end) or over the
    padded batch (the handout's "pad the sequences": the state after the padding)."""
    x = layers["embedding"](ids)                                          # (B, L, E)
    if packed:
        x = pack_padded_sequence(x, length.long(), batch_first=True, enforce_sorted=False)
    _, (hidden, _) = layers["lstm"](x)                                    # (1, B, H)
    return layers["fc"](hidden[-1])                                       # (B, O)


LSTM_FORMS = {"packed": {"packed": True}, "padded": {"packed": False}}


def lstm_batch(lengths, vocab=30, seed=0):
    """Padded ids (pad = 0) with the given (unsorted) lengths, and float lengths like collate."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, vocab, (len(lengths), max(lengths)), generator=gen)
    for row, n in enumerate(lengths):
        ids[row, n:] = 0
    return ids, torch.tensor(lengths, dtype=torch.float)


# -- LabLLM --------------------------------------------------------------------------------------


@pytest.fixture
def tiny_path(sub):
    return str(sub.fixtures / "tiny-gpt2")


@pytest.fixture
def tokenizer(tiny_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_path)
    tok.pad_token = tok.eos_token  # as the lab does: GPT-2 has no padding token
    return tok


@pytest.fixture
def tiny_model(tiny_path):
    """The fixture GPT-2 (2 layers, width 32, dropout 0.1), left in training mode."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    model.train()
    return model


def sharpen(model, scale: float):
    """Scale the final layer norm so the next-token distribution is peaked.

    A random tiny model predicts every token with probability ~1/512, so per-token losses are
    all alike; a peaked one has confident right and wrong predictions, which makes averaging
    mistakes (per batch, per sequence) visible, and at a large scale makes sampling (at any
    usual temperature, top-k or top-p) follow the greedy path.
    """
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.transformer.ln_f.weight.mul_(scale)
        model.transformer.ln_f.bias.mul_(scale)
    return model


def generation_model(model, scale: float = 3000.0):
    """A model for the generation tests: peaked (`sharpen`), and with an output layer of its own
    whose rows are the token embeddings in a fixed cyclic order. The tiny model mostly predicts
    the token it just read, so this one walks a long cycle of distinct tokens: its greedy text
    repeats no token, so sampling (temperature, top-k, top-p), beam search, repetition penalties
    and no-repeat n-grams all give the greedy text."""
    model = sharpen(model, scale)
    vocab = model.config.vocab_size
    order = torch.randperm(vocab - 1, generator=torch.Generator().manual_seed(661)) + 1
    follower = torch.arange(vocab)                    # the end-of-text token 0 stays in place
    follower[order] = order.roll(-1)
    source = torch.empty_like(follower)
    source[follower] = torch.arange(vocab)           # logits[v] = what the model gave source[v]
    with torch.no_grad():
        model.lm_head.weight = nn.Parameter(model.transformer.wte.weight[source].clone())
    return model


WIKI_LINES = [
    "The bridge at Aldwick was completed in 1880 after 5 years of work .",
    f"Edith Carrow was born in Lindale in 1871 . {EOS_TEXT} She painted the harbour .",
    "Local newspapers described the abbey as one of the finest in the region .",
    "In 1902 , Hugo Marsh moved to Port Ewan and worked as a painter .",
    "The canal closed in 1931 and reopened as a museum in 1960 .",
    "A fire in 1899 destroyed the east wing , which was rebuilt by Ada Winslow .",
    "The mill is 4 @,@ 300 metres long .",
]


def encode_rows(tokenizer, texts, max_length):
    """Rows like the lab's tokenized dataset: input_ids, attention_mask, labels (-100 at pads)."""
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length,
                    return_tensors="pt")
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    return [{"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
             "labels": labels[i]} for i in range(len(texts))]


def generated(llm, model, tokenizer, prompt, max_length):
    """What generate_text gives: the text it returns (a one-string list counts) and what it
    prints (the course notebook's version prints its text)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        out = llm.generate_text(model, tokenizer, prompt, max_length=max_length)
    if isinstance(out, (list, tuple)) and len(out) == 1 and isinstance(out[0], str):
        out = out[0]
    return {"returned": out if isinstance(out, str) else None, "kind": type(out).__name__,
            "printed": printed.getvalue()[-4000:]}


def tokenized(llm, tokenizer, texts, max_length=512):
    """{input_ids, attention_mask, labels} (N, T) tensors from the submission's preparation:
    lmgrade's `prepare_dataset(texts, tokenizer, max_length)`, or the course notebook's batched
    `tokenize_function(examples)` (it reads the global `tokenizer`; its max_length is 512)."""
    prepare = optional(llm, "prepare_dataset")
    if prepare is not None:
        ds = prepare(list(texts), tokenizer, max_length=max_length)
        rows = [ds[i] for i in range(len(ds))]
        keys = [k for k in ("input_ids", "attention_mask", "labels") if all(k in r for r in rows)]
        return {k: torch.stack([torch.as_tensor(r[k]) for r in rows]) for k in keys}
    course = optional(llm, "tokenize_function")
    if course is None:
        pytest.fail("LabLLM defines neither prepare_dataset(texts, tokenizer, max_length) nor "
                    "the course notebook's tokenize_function(examples)", pytrace=False)
    llm.tokenizer = tokenizer  # the notebook's function reads the global tokenizer
    enc = course({"text": list(texts)})
    return {k: torch.as_tensor(enc[k]) for k in ("input_ids", "attention_mask", "labels")
            if k in enc}


def trainer_for(llm, model, train_rows, eval_rows, tokenizer, output_dir, **settings):
    """A Trainer from lmgrade's `build_trainer(...)`, or one built here from the course
    notebook's first top-level `TrainingArguments` (the full fine-tuning's) with the test's sizes
    (`settings`), keeping the student's evaluation and logging strategies. Returns (trainer,
    form)."""
    build = optional(llm, "build_trainer")
    if build is not None:
        return build(model, train_rows, eval_rows, output_dir=output_dir, **settings), "build_trainer"
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    found = module_objects(llm, TrainingArguments)
    if not found:
        pytest.fail("LabLLM defines neither build_trainer(model, train_dataset, eval_dataset, ...) "
                    "nor TrainingArguments in a top-level cell (the course notebook's "
                    "training_args)", pytrace=False)
    sizes = {"num_train_epochs": settings.get("num_train_epochs", 3),
             "per_device_train_batch_size": settings.get("batch_size", 8),
             "per_device_eval_batch_size": settings.get("batch_size", 8),
             "learning_rate": settings.get("learning_rate", 5e-5),
             "warmup_steps": settings.get("warmup_steps", 500)}
    args = dataclasses.replace(found[0], output_dir=output_dir, report_to="none",
                               save_strategy="no", load_best_model_at_end=False, **sizes)
    collator = DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm=False)
    return Trainer(model=model, args=args, train_dataset=train_rows, eval_dataset=eval_rows,
                   data_collator=collator), "training_args"


def lora_model(llm, model):
    """lmgrade's `apply_lora(model)`, or peft's get_peft_model with the course notebook's
    top-level `LoraConfig`."""
    apply = optional(llm, "apply_lora")
    if apply is not None:
        return apply(model)
    from peft import LoraConfig, get_peft_model

    found = module_objects(llm, LoraConfig)
    if not found:
        pytest.fail("LabLLM defines neither apply_lora(model) nor a LoraConfig in a top-level "
                    "cell (the course notebook's peft_config)", pytrace=False)
    return get_peft_model(model, copy.deepcopy(found[0]))


@pytest.fixture
def lab(sub):
    """Helpers and word lists shared by the tests."""
    return SimpleNamespace(
        CONTENT_WORDS=CONTENT_WORDS, TEST_STOP_WORDS=TEST_STOP_WORDS, WIKI_LINES=WIKI_LINES,
        EOS_TEXT=EOS_TEXT,
        write_imdb_csv=lambda path, rows: write_imdb_csv(sub.fixtures, path, rows),
        sharpen=sharpen, generation_model=generation_model, encode_rows=encode_rows, generated=generated, tokenized=tokenized,
        trainer_for=trainer_for, lora_model=lora_model, optional=optional, expect=expect,
        module_objects=module_objects,
        fixed_init=fixed_init, lstm_layers=lstm_layers, lstm_forward=lstm_forward,
        LSTM_FORMS=LSTM_FORMS, lstm_batch=lstm_batch)
