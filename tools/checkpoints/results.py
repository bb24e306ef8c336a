"""Result rows: one per submission, written as CSV and JSON, merged across shards.

The JSON file carries a ``meta`` block (shard, test file digest, settings, versions) so
``lmgrade checkpoints-merge`` can check that the shards of a Slurm array belong together and
that none is missing or overlaps another. The optional Gradescope file has one row per
student (``Name, SID, Email, Score``), the columns Gradescope's "Upload scores" accepts.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

SCHEMA = "lmgrade-checkpoints/1"


@dataclass
class CheckRow:
    """The outcome for one submission. ``passed`` needs no error and perplexity < threshold."""

    submission_id: str
    students: str = ""
    emails: str = ""
    sids: str = ""
    perplexity: float | None = None
    mean_nll: float | None = None
    tokens_scored: int = 0
    passed: bool = False
    score: float = 0.0
    seconds: float = 0.0
    error: str = ""
    error_kind: str = ""
    variant: str = ""
    other_variant_perplexity: float | None = None
    scoring_path: str = ""
    dtype: str = ""
    device: str = ""
    n_vocab: int | None = None
    n_embd: int | None = None
    n_head: int | None = None
    n_positions: int | None = None
    n_layer: int | None = None
    n_params: int | None = None
    train_flops: int | None = None
    flop_budget: str = ""
    study_flops: int | None = None  # question 2.5's run (1e15 budget), from another YAML file
    study_budget: str = ""  # ok, over, or missing
    study_config: str = ""
    checkpoint: str = ""
    config: str = ""
    sha256: str = ""
    load_seconds: float = 0.0
    notes: str = ""


COLUMNS = [f.name for f in fields(CheckRow)]
_INT_COLUMNS = {f.name for f in fields(CheckRow) if "int" in str(f.type)}
_FLOAT_COLUMNS = {f.name for f in fields(CheckRow) if "float" in str(f.type)}


def write_results(rows: list[CheckRow], csv_path: Path, meta: dict[str, Any]) -> Path:
    """Write ``csv_path`` and the JSON twin (same stem, ``.json``); returns the JSON path."""
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_value(v) for k, v in asdict(row).items()})
    json_path = json_twin(csv_path)
    payload = {"schema": SCHEMA, "meta": meta, "rows": [_json_row(r) for r in rows]}
    json_path.write_text(json.dumps(payload, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return json_path


def json_twin(path: Path) -> Path:
    """``results.csv`` -> ``results.json`` (a ``.json`` path is its own twin)."""
    return path if path.suffix == ".json" else path.with_suffix(".json")


def write_gradescope_scores(rows: list[CheckRow], path: Path) -> None:
    """One line per student: ``Name, SID, Email, Score`` (rows without students are skipped)."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Name", "SID", "Email", "Score"])
        for row in rows:
            names, sids, emails = (_split(row.students), _split(row.sids), _split(row.emails))
            for i in range(max(len(names), len(sids), len(emails))):
                writer.writerow([_at(names, i), _at(sids, i), _at(emails, i), row.score])


def read_results(path: Path) -> tuple[list[CheckRow], dict[str, Any] | None]:
    """Rows (and the meta block for JSON files) of a CSV or JSON result file."""
    if path.suffix == ".json":
        payload = json.loads(path.read_text(encoding="utf-8"))
        if payload.get("schema") != SCHEMA:
            raise ValueError(f"{path}: not an lmgrade checkpoints result (schema {payload.get('schema')!r})")
        return [_row_from(r) for r in payload["rows"]], payload.get("meta")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"submission_id", "perplexity", "passed"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)}")
        return [_row_from(r) for r in reader], None


def merge_results(paths: list[Path]) -> tuple[list[CheckRow], dict[str, Any]]:
    """Join shard outputs; raises ``ValueError`` on overlap, mixed settings or a missing shard."""
    rows: list[CheckRow] = []
    metas: list[tuple[Path, dict[str, Any]]] = []
    seen: dict[str, Path] = {}
    for path in paths:
        part, meta = read_results(path)
        for row in part:
            if row.submission_id in seen:
                raise ValueError(f"submission {row.submission_id} is in both {seen[row.submission_id]} and {path}")
            seen[row.submission_id] = path
        rows += part
        if meta is not None:
            metas.append((path, meta))
    merged_meta = _check_metas(metas)
    rows.sort(key=lambda r: r.submission_id)
    return rows, merged_meta


def _check_metas(metas: list[tuple[Path, dict[str, Any]]]) -> dict[str, Any]:
    if not metas:
        return {"shards": "unknown (CSV inputs)"}
    first_path, first = metas[0]
    for key in ("test_tokens_sha256", "settings", "n_submissions_total"):
        for path, meta in metas[1:]:
            if meta.get(key) != first.get(key):
                raise ValueError(f"{path} and {first_path} differ in {key}: {meta.get(key)!r} vs {first.get(key)!r}")
    count = int(first.get("shard", "1/1").split("/")[1])
    present = sorted(int(m.get("shard", "1/1").split("/")[0]) for _, m in metas)
    if len(metas) == len(present) and present != list(range(1, count + 1)):
        raise ValueError(f"shards present {present}, expected 1..{count} exactly once")
    merged = {k: v for k, v in first.items() if k not in ("shard", "seconds", "host")}
    merged["shard"] = f"merged {len(metas)}/{count}"
    return merged


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return value


def _json_row(row: CheckRow) -> dict[str, Any]:
    out = asdict(row)
    for key, value in out.items():
        if isinstance(value, float) and not math.isfinite(value):
            out[key] = str(value)  # JSON has no inf/nan
    return out


def _row_from(raw: dict[str, Any]) -> CheckRow:
    values: dict[str, Any] = {}
    for key in COLUMNS:
        if key not in raw:
            continue
        value = raw[key]
        if value in ("", None):
            values[key] = None if key in _INT_COLUMNS | _FLOAT_COLUMNS else ""
            if key in ("tokens_scored",):
                values[key] = 0
            continue
        if key == "passed":
            values[key] = value if isinstance(value, bool) else str(value).lower() == "true"
        elif key in _INT_COLUMNS:
            values[key] = int(float(value))
        elif key in _FLOAT_COLUMNS:
            values[key] = float(value)
        else:
            values[key] = str(value)
    for key in ("score", "seconds", "load_seconds"):
        if values.get(key) is None:
            values[key] = 0.0
    return CheckRow(**values)


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(";")] if text else []


def _at(items: list[str], i: int) -> str:
    return items[i] if i < len(items) else ""
