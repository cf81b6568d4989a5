"""The data step's report: counts, file lists, the figures per composer and split (prepare_report.json), and its
one-screen summary."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc

from midilm.core.rows import continuation_overhead, full_section
from midilm.data.dataset import SPLITS


def add_file_lists(report: dict, duplicates: dict, cut: dict, flagged: dict, normal: dict) -> None:
    """The files the scan set aside or cut, each with its reason, into the report."""
    report["files"].update(duplicates=len(duplicates), cut=len(cut), flagged=len(flagged))
    report["duplicate_files"] = dict(sorted(duplicates.items()))
    report["cut_files"] = dict(sorted(cut.items()))
    report["flagged_files"] = dict(sorted(flagged.items()))
    report["normal_range"] = normal


def make_report(
    seen: int,
    kept: int,
    skipped: dict[str, str],
    dataset,
    composers: list[str],
    composer_json: dict,
    base_vocab: int,
    vocab: int,
    tasks: tuple[str, ...] = ("continuation",),
    ids_after: tuple[int, int] | None = None,
) -> dict:
    """The dataset's figures; `ids_after` = (FULL, EOS) token ids, needed when there are accompaniment rows only.

    Computed with Arrow on the memory-mapped splits: no column is copied into Python objects.
    """
    per_split = {}
    notes = base_tokens = tokens = 0
    # Tokens per note from one task's rows, so no note counts twice: continuation's, else the full
    # sections of accompaniment rows (their melody sections repeat notes of the piece).
    measured = "continuation" if "continuation" in tasks else "accompaniment"
    for split in SPLITS:
        rows = row_table(dataset[split])
        per_split[split] = split_figures(rows, composers, tasks)
        split_notes, split_base_tokens, split_tokens = note_counts(dataset[split], rows, measured, ids_after)
        notes += split_notes
        base_tokens += split_base_tokens
        tokens += split_tokens
    reasons = Counter(skipped.values())
    return {
        "tasks": list(tasks),
        "files": {"seen": seen, "kept": kept, "skipped": len(skipped)},
        "skipped_by_reason": dict(reasons.most_common()),
        "skipped_files": dict(sorted(skipped.items())),
        "splits": per_split,
        "composers": composer_json,
        "vocabulary": {"base": base_vocab, "with_bpe": vocab},
        "tokens_per_note": {
            "before_bpe": round(base_tokens / notes, 4) if notes else None,
            "after_bpe": round(tokens / notes, 4) if notes else None,
        },
    }


def row_table(ds) -> pa.Table:
    """A split's columns the figures need, each row's length in place of its ids (no copy of the ids)."""
    table = ds.data.table
    return pa.table(
        {
            "composer": table.column("composer"),
            "source": table.column("source"),
            "length": pc.list_value_length(table.column("input_ids")),
            "augmentation": table.column("augmentation"),
            "task": table.column("task"),
            "n_notes": table.column("n_notes"),
            "n_base_tokens": table.column("n_base_tokens"),
        }
    )


def split_figures(rows: pa.Table, composers: list[str], tasks: tuple[str, ...]) -> dict:
    """A split's pieces, chunks and tokens, in all and per composer, and its rows per task."""
    grouped = (
        rows.group_by("composer").aggregate([("source", "count_distinct"), ("length", "sum"), ("length", "count")])
    ).to_pylist()
    by_label = {g["composer"]: g for g in grouped}
    per_composer = {
        name: {
            "pieces": int(by_label.get(label, {}).get("source_count_distinct", 0)),
            "chunks": int(by_label.get(label, {}).get("length_count", 0)),
            "tokens": int(by_label.get(label, {}).get("length_sum", 0) or 0),
        }
        for label, name in enumerate(composers)
    }
    by_task = {g["task"]: g["task_count"] for g in rows.group_by("task").aggregate([("task", "count")]).to_pylist()}
    return {
        "pieces": int(pc.count_distinct(rows.column("source")).as_py()) if len(rows) else 0,
        "chunks": len(rows),
        "tokens": int(pc.sum(rows.column("length")).as_py() or 0),
        "composers": per_composer,
        # infill rows are drawn from continuation rows while training, none is stored
        "tasks": {task: int(by_task.get(task, 0)) for task in tasks if task != "infill"},
    }


def note_counts(ds, rows: pa.Table, measured: str, ids_after: tuple[int, int] | None) -> tuple[int, int, int]:
    """Notes, tokens before BPE and music tokens after it in a split's unaugmented rows of the `measured` task."""
    originals = rows.filter(pc.and_(pc.equal(rows.column("augmentation"), ""), pc.equal(rows.column("task"), measured)))
    if not len(originals):
        return 0, 0, 0
    notes = int(pc.sum(originals.column("n_notes")).as_py())
    base_tokens = int(pc.sum(originals.column("n_base_tokens")).as_py())
    if measured == "continuation":
        # every chunk adds the header, the last chunk of a piece EOS: count music tokens only
        pieces = int(pc.count_distinct(originals.column("source")).as_py())
        tokens = int(pc.sum(originals.column("length")).as_py()) - continuation_overhead(len(originals), pieces)
        return notes, base_tokens, tokens
    tokens = 0
    full_id, eos_id = ids_after
    for batch in ds.select_columns(["input_ids", "augmentation", "task"]).iter(batch_size=1000):
        for ids, aug, task in zip(batch["input_ids"], batch["augmentation"], batch["task"]):
            if aug == "" and task == measured:
                music = full_section(ids, full_id)  # the melody section repeats its notes
                tokens += len(music) - (music[-1:] == [eos_id])
    return notes, base_tokens, tokens


def summary(report: dict) -> str:
    splits = report["splits"]
    reasons = report["skipped_by_reason"]
    why = ", ".join(f"{n} {r}" for r, n in list(reasons.items())[:5]) + (", …" if len(reasons) > 5 else "")
    lines = [
        f"files: {report['files']['seen']} seen, {report['files']['kept']} kept, {report['files']['skipped']} skipped"
        + (f" ({why})" if reasons else "")
        + "".join(f", {report['files'][k]} {k}" for k in ("duplicates", "cut", "flagged") if report["files"].get(k)),
        "pieces / chunks / tokens: "
        + ", ".join(f"{s} {v['pieces']} / {v['chunks']} / {v['tokens']}" for s, v in splits.items()),
        "composers: " + ", ".join(f"{r['composer']} ({r['pieces']})" for r in report["composers"]["composers"]),
        (
            f"vocabulary: {report['vocabulary']['base']} base → {report['vocabulary']['with_bpe']}; tokens per note "
            f"{report['tokens_per_note']['before_bpe']} → {report['tokens_per_note']['after_bpe']}"
        ),
    ]
    if report.get("tasks", ["continuation"]) != ["continuation"]:
        lines.append(
            "chunks per task: "
            + ", ".join(f"{s} " + " + ".join(f"{n} {t}" for t, n in v["tasks"].items()) for s, v in splits.items())
        )
    return "\n".join(lines)
