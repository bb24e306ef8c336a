"""Loading suites' judges.py from several threads at once (a batch grades in threads)."""

from __future__ import annotations

import threading

from grader.judges import load_rulebook

JUDGES = """\
import time

from grader.judges import rule


@rule("{name}_first")
def first(ev):
    return []


time.sleep(0.2)  # another thread loads its own file meanwhile


@rule("{name}_second")
def second(ev):
    return []
"""


def test_concurrent_loads_keep_each_suites_rules(tmp_path):
    suites = {}
    for name in ("alpha", "beta", "gamma"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "judges.py").write_text(JUDGES.format(name=name))
        suites[name] = folder
    books, errors = {}, []

    def load(name):
        try:
            books[name] = load_rulebook(suites[name])
        except Exception as err:  # reported by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=load, args=(name,)) for name in suites]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for name, book in books.items():
        own = {r for r in book.rules if r.split("_")[0] in suites}
        assert own == {f"{name}_first", f"{name}_second"}, (name, sorted(own))


def test_an_edited_judges_file_is_loaded_again(tmp_path):
    (tmp_path / "judges.py").write_text(JUDGES.format(name="old"))
    assert "old_second" in load_rulebook(tmp_path)
    (tmp_path / "judges.py").write_text(JUDGES.format(name="newer"))
    book = load_rulebook(tmp_path)
    assert "newer_second" in book and "old_second" not in book
