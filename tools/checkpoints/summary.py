"""The checker's summary on the console: a table of the rows, their errors, the counts. Shared by
the ``checkpoints`` command and its demo."""

from __future__ import annotations

import shutil

from rich.console import Console
from rich.table import Table

from tools.checkpoints.results import CheckRow

TABLE_ROWS = 60
# wide enough for the table when writing to a file or a CI log (rich's default there is 80)
console = Console(highlight=False, width=max(120, shutil.get_terminal_size((120, 24)).columns))


def print_summary(rows: list[CheckRow], threshold: float | None) -> None:
    """A table of the rows (up to 60), the error messages, and the pass/fail/error counts."""
    if len(rows) <= TABLE_ROWS:
        table = Table(title="checkpoint perplexity" + (f" (pass: < {threshold:g})" if threshold else ""))
        for column in (
            "submission",
            "students",
            "perplexity",
            "tokens",
            "variant",
            "result",
            "score",
            "s",
        ):
            table.add_column(column, no_wrap=column != "students")
        for row in rows:
            result = (
                "[green]pass[/green]"
                if row.passed
                else f"[red]{row.error_kind or 'error'}[/red]"
                if row.error
                else "[red]fail[/red]"
            )
            ppl = f"{row.perplexity:.3f}" if row.perplexity is not None else "-"
            table.add_row(
                row.submission_id,
                row.students,
                ppl,
                str(row.tokens_scored or "-"),
                row.variant or "-",
                result,
                f"{row.score:g}",
                f"{row.seconds:.2f}",
            )
        console.print(table)
        for row in rows:
            if row.error:
                console.print(f"  {row.submission_id} [{row.error_kind}] {row.error}", soft_wrap=True)
    passed = sum(r.passed for r in rows)
    errors = sum(bool(r.error) for r in rows)
    console.print(f"{len(rows)} submissions: {passed} passed, {len(rows) - passed - errors} failed, {errors} errors")
