"""``squadkit data stats`` as tables on a terminal (rich)."""

from __future__ import annotations

from pathlib import Path


def print_stats(file: Path, stats) -> None:
    """The summary, the length distributions and the problems of one file."""
    from rich.console import Console

    console = Console()
    console.print(f"{file}", markup=False, highlight=False, soft_wrap=True)
    console.print(_summary_table(stats))
    console.print(_lengths_table(stats))
    _print_problems(console, stats)


def _summary_table(stats):
    from rich.table import Table

    q = stats.questions or 1
    summary = Table(show_header=False)
    summary.add_column(style="bold")
    summary.add_column(justify="right")
    for label, value in [
        ("format", stats.format + (f" (version {stats.version})" if stats.version else "")),
        ("articles", f"{stats.articles:,}"),
        ("paragraphs", f"{stats.paragraphs:,}"),
        ("questions", f"{stats.questions:,}"),
        ("answerable", f"{stats.answerable:,} ({100 * stats.answerable / q:.1f}%)"),
        ("unanswerable", f"{stats.unanswerable:,} ({100 * stats.unanswerable / q:.1f}%)"),
    ]:
        summary.add_row(label, value)
    return summary


def _lengths_table(stats):
    from rich.table import Table

    lengths = Table(title="lengths" + (f" (tokens: {stats.tokenizer}, no special tokens)" if stats.tokenizer else ""),
                    title_justify="left")
    lengths.add_column("")
    for name in ("count", "min", "mean", "median", "p95", "max"):
        lengths.add_column(name, justify="right")
    rows = [("context chars", stats.context_chars), ("question chars", stats.question_chars),
            ("answer chars", stats.answer_chars)]
    if stats.context_tokens is not None:
        rows += [("context tokens", stats.context_tokens), ("question tokens", stats.question_tokens)]
    for label, ls in rows:
        lengths.add_row(label, f"{ls.count:,}", f"{ls.min:,}", f"{ls.mean:,.1f}", f"{ls.median:,.1f}",
                        f"{ls.p95:,.1f}", f"{ls.max:,}")
    return lengths


def _print_problems(console, stats) -> None:
    from rich.table import Table

    if not stats.problem_counts:
        console.print("problems: none")
        return
    problems = Table(title="problems", title_justify="left")
    problems.add_column("kind")
    problems.add_column("count", justify="right")
    for kind, count in sorted(stats.problem_counts.items()):
        problems.add_row(kind, f"{count:,}")
    console.print(problems)
    for p in stats.problems[:5]:
        console.print(f"  {p.message}", markup=False, highlight=False, soft_wrap=True)
    if len(stats.problems) > 5:
        console.print(f"  ... and {len(stats.problems) - 5} more")
