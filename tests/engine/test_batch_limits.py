"""An export is untrusted input: the batch refuses bombs before it extracts or parses them, and
the similarity report is bounded (issue #13, "a parent that cannot be exhausted")."""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

import pytest

from grader import batch


def test_a_zip_bomb_is_refused_before_extraction(tmp_path):
    bomb = tmp_path / "export.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("submission_1/model.py", b"\0" * (20 * 2**20))  # 20 MB of zeros: ~1000:1
    with pytest.raises(batch.BatchError, match="zip bomb"):
        batch.unpack_export(bomb, tmp_path / "out")
    assert not (tmp_path / "out" / "export").exists()


def test_a_zip_with_too_many_entries_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(batch, "MAX_EXPORT_ENTRIES", 5)
    path = tmp_path / "export.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(6):
            zf.writestr(f"s{i}/model.py", "x = 1\n")
    with pytest.raises(batch.BatchError, match="6 entries"):
        batch.unpack_export(path, tmp_path / "out")


def test_a_yaml_alias_bomb_in_the_metadata_is_refused(tmp_path):
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 12):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    path = tmp_path / batch.METADATA_FILE
    path.write_text("\n".join(lines) + "\n")
    started = time.monotonic()
    with pytest.raises(batch.BatchError, match="refused"):
        batch.load_metadata(path)
    assert time.monotonic() - started < 5


def test_gradescope_metadata_still_reads(tmp_path):
    path = tmp_path / batch.METADATA_FILE
    path.write_text(":submission_1:\n  :submitters:\n  - :name: Ada\n    :email: ada@x.edu\n    :sid: '7'\n")
    assert batch.load_metadata(path) == {"submission_1": [{"name": "Ada", "email": "ada@x.edu", "sid": "7"}]}


def test_similarity_skips_huge_files_and_stops_at_its_time_limit(tmp_path, toy):
    folders = []
    for i in range(4):
        folder = tmp_path / f"s{i}"
        folder.mkdir()
        body = (toy.reference_dir / "ops.py").read_text()
        (folder / "ops.py").write_text(body + f"\n# copy {i}\n")
        folders.append(batch.Submission(id=f"s{i}", folder=folder))
    huge = tmp_path / "huge"
    huge.mkdir()
    (huge / "ops.py").write_text("x = 1\n" * (batch.MAX_SIMILARITY_FILE_CHARS // 5))
    subs = [*folders, batch.Submission(id="huge", folder=huge)]
    pairs = batch.find_similar(toy, subs)
    assert pairs and all("huge" not in (p.a, p.b) for p in pairs)
    with pytest.raises(batch.SimilarityStopped, match="stopped after 0 CPU seconds"):
        batch.find_similar(toy, subs, time_limit=0.0)


def test_grades_csv_is_written_before_similarity(tmp_path, toy, monkeypatch):
    """A similarity report that fails or hangs must not cost the grades. (It runs beside the
    gradings: here it cannot finish before the grades are written.)"""
    import threading

    order, graded = [], threading.Event()

    def grades(a, rows, p):
        order.append("grades")
        graded.set()
        return Path(p)

    def similar(*a, **k):
        assert graded.wait(10), "the grades waited for the similarity report"
        order.append("similarity")
        return []

    monkeypatch.setattr(batch, "write_grades_csv", grades)
    monkeypatch.setattr(batch, "find_similar", similar)
    monkeypatch.setattr(batch, "_grade_with_progress", lambda *a, **k: [])
    monkeypatch.setattr(batch, "write_report", lambda *a, **k: tmp_path / "report.html")
    monkeypatch.setattr(batch, "write_similarity_csv", lambda *a, **k: None)
    export = tmp_path / "export"
    (export / "s1").mkdir(parents=True)
    batch.run_batch(toy, export, tmp_path / "out")
    assert order == ["grades", "similarity"]
