"""Tests of grader.notebook: notebook extraction and percent-format conversion."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import nbformat
import pytest

from grader.notebook import (
    NotebookError,
    extract_cells,
    extract_notebook,
    notebook_to_py,
    py_to_notebook,
)


def write_notebook(path, cells):
    """cells: list of (cell_type, source)."""
    nb = nbformat.v4.new_notebook()
    for kind, source in cells:
        maker = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
        nb.cells.append(maker(textwrap.dedent(source)))
    nbformat.write(nb, str(path))
    return path


def load_module(source, tmp_path, name="extracted"):
    """Import extracted source in a fresh namespace (as the stager's file would be)."""
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    namespace: dict = {"__name__": name}
    exec(compile(source, str(path), "exec"), namespace)
    return namespace


LAB = [
    ("markdown", "# Lab\nSome *instructions*.\n```python\nimport nothing_here\n```"),
    ("code", "!pip install torch\n%matplotlib inline\nimport math\nimport os.path as osp\n"),
    (
        "code",
        """\
        from collections import Counter
        MAX_LENGTH = 256
        NAMES = ("a", "b")
        PAIRS = {"x": [1, 2], "y": -3.5}
        DOUBLE = MAX_LENGTH * 2
        ROOT = math.sqrt(16)
        """,
    ),
    (
        "code",
        """\
        def count(words):
            return Counter(words)

        class Box:
            size = MAX_LENGTH
        """,
    ),
    (
        "code",
        """\
        data = load_everything("./IMDBDataset.csv")
        counts = count(["a", "b", "a"])
        print(counts)
        for i in range(3):
            print(i)
        if __name__ == "__main__":
            count([])
        """,
    ),
]


def test_valid_notebook_takes_definitions_and_skips_runs(tmp_path):
    ex = extract_notebook(write_notebook(tmp_path / "Lab.ipynb", LAB))
    assert ex.errors == []
    ns = load_module(ex.source, tmp_path)
    assert ns["count"](["a", "a"]) == {"a": 2}
    assert ns["Box"].size == 256 and ns["DOUBLE"] == 512 and ns["ROOT"] == 4.0
    assert ns["NAMES"] == ("a", "b") and ns["PAIRS"]["y"] == -3.5
    assert ns["osp"].join("a", "b") == "a/b"
    for name in ("data", "counts", "i", "load_everything"):
        assert name not in ns
    assert "import math (cell 2)" in ex.taken
    assert "def count (cell 4)" in ex.taken and "class Box (cell 4)" in ex.taken
    assert any("cell 5" in s and "load_everything" in s for s in ex.skipped)
    assert any("cell 5" in s and "count" in s and "defined in this notebook" in s for s in ex.skipped)
    assert any("cell 5" in s and "loop" in s for s in ex.skipped)
    assert any("cell 5" in s and "if statement" in s for s in ex.skipped)


def test_markdown_cells_are_ignored(tmp_path):
    ex = extract_notebook(write_notebook(tmp_path / "Lab.ipynb", LAB))
    assert "import nothing_here" not in ex.source
    assert not any("cell 1" in item for item in ex.taken + ex.skipped + ex.errors)


def test_magics_are_stripped_and_reported(tmp_path):
    cells = [
        (
            "code",
            """\
        %%time
        import math
        """,
        ),
        ("code", "%%bash\necho hi\n"),
        (
            "code",
            """\
        files = !ls
        def f():
            return 1
        if True:
            !echo indented
        %pip install -q peft
        """,
        ),
    ]
    ex = extract_notebook(write_notebook(tmp_path / "Lab.ipynb", cells))
    assert ex.errors == []
    ns = load_module(ex.source, tmp_path)
    assert ns["f"]() == 1 and "math" in ns and "files" not in ns
    assert any("cell 1" in s and "%%time" in s for s in ex.skipped)
    assert any("cell 2" in s and "not Python" in s for s in ex.skipped)
    assert any("cell 3" in s and "!ls" in s for s in ex.skipped)
    assert any("cell 3" in s and "%pip install" in s for s in ex.skipped)
    assert "echo" not in ex.source


def test_syntax_error_cell_is_skipped_and_reported(tmp_path):
    cells = [
        ("code", "def good():\n    return 1\n"),
        ("code", "def bad(:\n    return 2\n"),
        ("code", "def after():\n    return good() + 1\n"),
    ]
    ex = extract_notebook(write_notebook(tmp_path / "Lab.ipynb", cells))
    assert len(ex.errors) == 1 and ex.errors[0].startswith("cell 2: SyntaxError at line 1")
    ns = load_module(ex.source, tmp_path)
    assert ns["after"]() == 2 and "bad" not in ns
    assert "cell 2: SyntaxError" in ex.report()


def test_a_name_lost_with_a_cell_that_does_not_parse_says_why(tmp_path):
    """Real starters leave cells that do not parse (`corpus =`): a test asking for a function of
    such a cell names the notebook and the cell's error, not the extracted .py file."""
    import types

    from grader.submission import ModuleProxy, SubmissionError

    cells = [
        ("code", "def good():\n    return 1\n"),
        ("code", "def build(words):\n    corpus =\n    return corpus\n\nclass Model:\n    size = 1\n"),
    ]
    ex = extract_notebook(write_notebook(tmp_path / "Lab.ipynb", cells))
    why = "cell 2: SyntaxError at line 2: invalid syntax"
    assert ex.lost == {"build": why, "Model": why}
    module = types.ModuleType("Lab")
    module.good = lambda: 1
    proxy = ModuleProxy(module, "Lab.ipynb", ex.lost)
    assert proxy.good() == 1
    with pytest.raises(SubmissionError) as err:
        proxy.build  # noqa: B018 - the attribute access is what is tested
    assert str(err.value) == f"Lab.ipynb does not define `build` ({why}; that cell was skipped whole)"
    with pytest.raises(SubmissionError) as err:
        proxy.other  # noqa: B018
    assert str(err.value) == "Lab.ipynb does not define `other`"


def test_redefinition_keeps_notebook_order(tmp_path):
    cells = [
        ("code", "def f():\n    return 'first'\nLIMIT = 1\n"),
        ("code", "def f():\n    return 'second'\nLIMIT = 2\n"),
        ("code", "def f(:\n    return 'broken third'\n"),
    ]
    ns = load_module(extract_notebook(write_notebook(tmp_path / "L.ipynb", cells)).source, tmp_path)
    assert ns["f"]() == "second" and ns["LIMIT"] == 2


def test_constants_taken_and_skipped(tmp_path):
    cells = [
        (
            "code",
            """\
        import string
        from pandas import read_csv
        import json
        PUNCT = set(string.punctuation)          # import-based constant: taken
        SIZES = [len(w) for w in ("ab", "c")]     # comprehension over literals: taken
        PICK = sorted(PUNCT)[0]
        CONFIG = json.loads('{"a": 1}')           # loads is not a loader of files: taken
        frame = read_csv("./IMDBDataset.csv")     # data load: skipped
        model = string.Template.from_pretrained("gpt2")  # model load: skipped
        table = json.load(open("x.json"))         # file read: skipped
        doubled = UNKNOWN * 2                     # undefined name: skipped
        obj.attr = 3                              # attribute target: skipped
        counter: int                              # annotation only: skipped
        """,
        )
    ]
    ex = extract_notebook(write_notebook(tmp_path / "L.ipynb", cells))
    ns = load_module(ex.source, tmp_path)
    assert ns["PUNCT"] == set(__import__("string").punctuation)
    assert ns["SIZES"] == [2, 1] and ns["CONFIG"] == {"a": 1}
    for name in ("frame", "model", "table", "doubled", "counter"):
        assert name not in ns, name
    assert any("read_csv" in s for s in ex.skipped)
    assert any(".from_pretrained()" in s for s in ex.skipped)
    assert any("UNKNOWN" in s for s in ex.skipped)
    assert any("attribute" in s for s in ex.skipped)


def test_skipped_global_used_by_a_definition_is_explained(tmp_path):
    cells = [
        ("code", "import json\ntokenizer = json.load(open('tok.json'))\n"),
        ("code", "def encode(text):\n    return tokenizer(text)\n"),
    ]
    ex = extract_notebook(write_notebook(tmp_path / "L.ipynb", cells))
    assert len(ex.undefined) == 1
    assert "encode (cell 2) uses `tokenizer`" in ex.undefined[0]
    assert "cell 1" in ex.undefined[0]


def test_colab_imports_are_guarded(tmp_path):
    cells = [
        (
            "code",
            (
                "from google.colab import drive\nimport IPython.display as ipd\n"
                "drive.mount('/content/drive')\nimport math\n"
            ),
        )
    ]
    ex = extract_notebook(write_notebook(tmp_path / "L.ipynb", cells))
    ns = load_module(ex.source, tmp_path)
    assert "math" in ns
    assert any("mount" in s for s in ex.skipped)


def test_try_block_of_imports_is_taken(tmp_path):
    cells = [
        (
            "code",
            """\
        try:
            from nltk.corpus import stopwords
            HAVE_NLTK = True
        except ImportError:
            HAVE_NLTK = False
        """,
        )
    ]
    ns = load_module(extract_notebook(write_notebook(tmp_path / "L.ipynb", cells)).source, tmp_path)
    assert "HAVE_NLTK" in ns


@pytest.mark.parametrize(
    "content, expected",
    [
        ("{not json", "not JSON"),
        ("", "not JSON"),
        ("{}", "not a valid notebook"),
        ("[1, 2]", "structure of a Jupyter notebook"),
        (json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": 5}), "not a valid notebook"),
    ],
)
def test_invalid_notebook_raises_notebook_error(tmp_path, content, expected):
    path = tmp_path / "LabRNN.ipynb"
    path.write_text(content)
    with pytest.raises(NotebookError) as info:
        extract_notebook(path)
    assert str(info.value).startswith("LabRNN.ipynb ")
    assert expected in str(info.value)


def test_binary_file_raises_notebook_error(tmp_path):
    path = tmp_path / "LabRNN.ipynb"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    with pytest.raises(NotebookError, match="LabRNN.ipynb is not a valid notebook"):
        extract_notebook(path)


def test_report_lists_every_section():
    ex = extract_cells([("code", "import math\nmath.sqrt(2)\n"), ("code", "def f(:\n")], name="LabLLM.ipynb")
    report = ex.report()
    assert report.startswith("LabLLM.ipynb:")
    for text in ("Errors", "Taken", "Skipped", "import math (cell 1)", "cell 2: SyntaxError"):
        assert text in report


PERCENT = """\
# %% [markdown]
# # Lab 1
# Read the instructions.

# %%
import math


# %%
def area(r):
    # BEGIN SOLUTION
    return math.pi * r * r
    # END SOLUTION
"""


def test_percent_format_round_trip():
    nb = py_to_notebook(PERCENT)
    assert [c.cell_type for c in nb.cells] == ["markdown", "code", "code"]
    assert nb.cells[0].source.startswith("# Lab 1")
    assert [c.id for c in nb.cells] == ["cell-1", "cell-2", "cell-3"]
    assert nbformat.validate(nb) is None
    assert py_to_notebook(notebook_to_py(nb)) == nb
    assert nbformat.writes(py_to_notebook(PERCENT)) == nbformat.writes(nb)  # deterministic


def test_generated_notebook_extracts_to_working_module(tmp_path):
    path = tmp_path / "Lab.ipynb"
    nbformat.write(py_to_notebook(PERCENT), str(path))
    ns = load_module(extract_notebook(path).source, tmp_path)
    assert abs(ns["area"](1.0) - 3.14159) < 1e-4


def test_extracted_module_imports_in_a_fresh_interpreter(tmp_path):
    """What the stager does: write the source as a module file, import it by name."""
    ex = extract_notebook(write_notebook(tmp_path / "LabX.ipynb", LAB))
    (tmp_path / "LabX.py").write_text(ex.source)
    out = subprocess.run(
        [sys.executable, "-c", "import LabX; print(LabX.count('aab')['a'])"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "2"


def test_stager_reports_a_corrupted_notebook(tmp_path):
    """A broken notebook fails only its alias, with the NotebookError text (engine stager)."""
    from grader.assignment import load_assignment
    from grader.submission import stage

    assignment = load_assignment("duke_ece661_hw3")
    submission = tmp_path / "submission"
    submission.mkdir()
    (submission / "LabRNN.ipynb").write_text('{"cells": [', encoding="utf-8")
    nbformat.write(py_to_notebook(PERCENT), str(submission / "LabLLM.ipynb"))
    staged = stage(assignment, submission, tmp_path / "staged")
    assert staged.errors["rnn"].startswith("LabRNN.ipynb is not a valid notebook")
    assert staged.found["llm"] == "LabLLM.py" and "llm" not in staged.errors
    assert any("LabLLM.ipynb: cells are numbered" in note for note in staged.notes)


# -- what functions read: cheap instances of notebook classes (issue #11) ---------------------

HPARAMS_CELLS = [
    (
        "code",
        """\
        from nltk.corpus import stopwords
        import torch
        """,
    ),
    (
        "code",
        """\
        def stop_words():
            return set(["the", "a"])


        class HyperParams:
            def __init__(self, lr=0.001):
                self.UNK_TOKEN = '<unk>'
                self.STOP_WORDS = stop_words()
                self.LR = lr
        """,
    ),
    (
        "code",
        """\
        hparams = HyperParams()
        hparams.LR = 0.01
        hparams.__dict__["MAX_LENGTH"] = 256
        torch.backends.cudnn.benchmark = True
        """,
    ),
    (
        "code",
        """\
        def tokenize(vocab, example):
            return [vocab.get(w, vocab[hparams.UNK_TOKEN]) for w in example.split()]
        """,
    ),
]


def test_instance_of_a_notebook_class_is_kept(tmp_path):
    ex = extract_cells([(k, textwrap.dedent(s)) for k, s in HPARAMS_CELLS], name="LabRNN.ipynb")
    ns = load_module(ex.source, tmp_path)
    assert ns["tokenize"]({"<unk>": 1, "good": 2}, "good zebra") == [2, 1]
    assert ns["hparams"].LR == 0.01 and ns["hparams"].MAX_LENGTH == 256
    assert "object hparams (a HyperParams) (cell 3)" in ex.taken
    assert ex.undefined == []  # tokenize's global is set by a kept statement
    assert any("cudnn.benchmark" in s and "attribute" in s for s in ex.skipped)  # a module's
    assert "Rule:" in ex.report() and "hparams = HyperParams()" in ex.report()


@pytest.mark.parametrize(
    "constructor, why",
    [
        ("self.df = pd.read_csv('IMDBDataset.csv')", "calls read_csv()"),
        ("self.model = AutoModel.from_pretrained('gpt2')", "calls from_pretrained()"),
        ("self.vocab = make_vocab()", "calls make_vocab, which calls read_csv()"),
        ("self.vocab = VOCAB", "reads `VOCAB`, which no taken statement defines"),
        ("self.history = train_for(5)", "calls train_for, which calls fit()"),
    ],
)
def test_instance_whose_constructor_loads_or_trains_is_skipped(tmp_path, constructor, why):
    cells = [
        ("code", "import pandas as pd\nfrom transformers import AutoModel\n"),
        (
            "code",
            ("def make_vocab():\n    return pd.read_csv('x.csv')\n\n\ndef train_for(n):\n    return Runner().fit(n)\n"),
        ),
        ("code", f"class Lab:\n    def __init__(self):\n        {constructor}\n"),
        ("code", "lab = Lab()\n"),
    ]
    ex = extract_cells(cells)
    skipped = [s for s in ex.skipped if "cell 4" in s]
    assert len(skipped) == 1 and f"instantiates Lab, whose constructor {why}" in skipped[0], skipped
    assert "lab" not in load_module(ex.source, tmp_path)


def test_subclass_of_a_heavy_notebook_class_is_skipped():
    cells = [
        (
            "code",
            (
                "class Base:\n    def __init__(self):\n        self.data = open('x.txt').read()\n"
                "\n\nclass Child(Base):\n    pass\n\n\nchild = Child()\nok = Base.__name__\n"
            ),
        )
    ]
    ex = extract_cells(cells)
    assert any("instantiates Child, whose constructor calls open()" in s for s in ex.skipped)
    assert "constant ok (cell 1)" in ex.taken


def test_calling_a_notebook_function_is_still_a_run():
    ex = extract_cells([("code", "def load_imdb():\n    return 1, 2\n\n\nx_train, x_test = load_imdb()\n")])
    assert any("calls load_imdb, defined in this notebook (a run)" in s for s in ex.skipped)


def test_a_function_is_not_warned_about_its_own_results():
    """An unfinished template's load_imdb reads x_test, which only `... = load_imdb()` sets."""
    cells = [
        ("code", ("def load_imdb():\n    # Add your code here.\n\n    return x_train, x_valid, x_test\n")),
        ("code", "x_train, x_valid, x_test = load_imdb()\n"),
        ("code", "def evaluate():\n    return len(x_test)\n"),
    ]
    ex = extract_cells(cells)
    assert len(ex.undefined) == 1 and ex.undefined[0].startswith("evaluate (cell 3) uses `x_test`")


def test_line_map_points_into_the_notebook(tmp_path):
    cells = [
        ("markdown", "# Lab"),
        ("code", "%matplotlib inline\nimport math\n"),
        ("code", "from google.colab import drive\n"),
        ("code", "X = 1\n\n\ndef f(y):\n    return math.sqrt(y)\n"),
    ]
    ex = extract_cells(cells)
    lines = ex.source.splitlines()
    assert len(ex.line_map) == len(lines)
    for index, where in enumerate(ex.line_map):
        if where is not None:
            cell, line = where
            source = cells[cell - 1][1].splitlines()
            assert source[line - 1].strip() == lines[index].strip(), (index, where)
    assert ex.line_map[lines.index("    return math.sqrt(y)")] == [4, 5]
    assert ex.line_map[lines.index("try:")] is None  # lmgrade's guard around a Colab import
