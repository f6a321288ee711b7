"""The parts of one commit, written once for both SQL stores, in the order `WriteBatch`
documents. Each store runs `apply` inside its own write transaction (`store.sql`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from mljob_operator.engine.persistence import ActiveSnapshotError, CommitResult, WriteBatch
from mljob_operator.store.rows import (
    BUCKET,
    BUCKET_COLS,
    INFLUENCER,
    INFLUENCER_COLS,
    MODEL_PLOT,
    MODEL_PLOT_COLS,
    RECORD_COLS,
    RESULT_TABLES,
    SNAPSHOT_COLS,
    json_text,
    record_row,
    snapshot_row,
)
from mljob_operator.store.tx import Tx

ADD_JOB = "INSERT INTO jobs (job_id) VALUES (?) ON CONFLICT DO NOTHING"
_UPSERT_BUCKETS = (
    f"INSERT INTO buckets (job_id, {BUCKET_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (job_id, timestamp_ms) DO UPDATE"
    " SET bucket_span = EXCLUDED.bucket_span, anomaly_score = EXCLUDED.anomaly_score,"
    " initial_anomaly_score = EXCLUDED.initial_anomaly_score,"
    " raw_score = EXCLUDED.raw_score, is_interim = EXCLUDED.is_interim,"
    " event_count = EXCLUDED.event_count"
)


def apply(tx: Tx, job_id: str, b: WriteBatch) -> CommitResult:
    tx.run(ADD_JOB, (job_id,))
    seq = _append_wal(tx, job_id, b)
    _write_results(tx, job_id, b)
    if b.rescore is not None:
        _rescore(tx, job_id, b)
    _update_job_row(tx, job_id, b)
    if b.snapshot is not None:
        tx.run(
            f"INSERT INTO snapshots (job_id, {SNAPSHOT_COLS}, state) VALUES (?{', ?' * 12})",
            snapshot_row(job_id, b.snapshot, b.snapshot_state or b""),
        )
    results_deleted, snapshots_deleted = _delete(tx, job_id, b)
    if b.close_step is not None:
        step = b.close_step
        tx.run(
            "INSERT INTO close_steps (job_id, close_id, step, result) VALUES (?, ?, ?, ?)",
            (job_id, step.close_id, step.step, json_text(step.result)),
        )
    return CommitResult(seq, results_deleted, snapshots_deleted)


def _append_wal(tx: Tx, job_id: str, b: WriteBatch) -> int | None:
    if b.wal_kind is None:
        return None
    rows = tx.all(
        "INSERT INTO wal (job_id, kind, payload, received_ms) VALUES (?, ?, ?, ?) RETURNING seq",
        (job_id, b.wal_kind, b.wal_payload, b.received_ms),
    )
    return int(rows[0][0])


def _write_results(tx: Tx, job_id: str, b: WriteBatch) -> None:
    if b.clear_interim:
        for table in RESULT_TABLES:
            tx.run(f"DELETE FROM {table} WHERE job_id = ? AND is_interim", (job_id,))
    if b.buckets:
        stamps = [x.timestamp for x in b.buckets]
        for table in RESULT_TABLES[1:]:
            tx.delete_in(table, "timestamp_ms", job_id, stamps)
        tx.many(_UPSERT_BUCKETS, [BUCKET.row(job_id, x) for x in b.buckets])
    # rows as generators: each is built as the database takes it
    if b.records:
        tx.insert("records", RECORD_COLS, (record_row(job_id, r) for r in b.records))
    if b.model_plot:
        rows = (MODEL_PLOT.row(job_id, m) for m in b.model_plot)
        tx.insert("model_plot", MODEL_PLOT_COLS, rows, MODEL_PLOT.texts)
    if b.influencers:
        rows = (INFLUENCER.row(job_id, i) for i in b.influencers)
        tx.insert("influencers", INFLUENCER_COLS, rows, INFLUENCER.texts)


def _rescore(tx: Tx, job_id: str, b: WriteBatch) -> None:
    rs = b.rescore
    assert rs is not None
    for table, key, column, score in (
        ("buckets", "timestamp_ms", "anomaly_score", rs.bucket_score),
        ("records", "id", "record_score", rs.record_score),
        ("influencers", "id", "influencer_score", rs.record_score),
    ):
        rows = tx.all(
            f"SELECT {key}, raw_score FROM {table} WHERE job_id = ? AND timestamp_ms >= ?"
            " AND NOT is_interim AND raw_score > ?",
            (job_id, rs.since_ms, rs.min_raw),
        )
        if rows:
            scores = score(np.array([r[1] for r in rows], dtype=np.float64)).tolist()
            keys = [r[0] for r in rows]
            tx.update_in(table, column, key, job_id, list(zip(keys, scores, strict=True)))


def _update_job_row(tx: Tx, job_id: str, b: WriteBatch) -> None:
    sets: list[str] = []
    args: list[Any] = []
    for column, value in (
        ("data_counts", None if b.data_counts is None else json_text(b.data_counts.to_dict())),
        (
            "model_size_stats",
            None if b.model_size_stats is None else json_text(b.model_size_stats.to_dict()),
        ),
        ("intake_open", b.intake_open),
        ("close_id", b.close_id),
        ("close_complete", b.close_complete),
        ("active_snapshot_id", b.activate_snapshot),
        ("owner_uid", b.owner_uid),
    ):
        if value is not None:
            sets.append(f"{column} = ?")
            args.append(value)
    if sets:
        tx.run(f"UPDATE jobs SET {', '.join(sets)} WHERE job_id = ?", (*args, job_id))


def _delete(tx: Tx, job_id: str, b: WriteBatch) -> tuple[int, int]:
    """WAL truncation, snapshots and results the batch deletes: (results, snapshots)."""
    if b.truncate_wal_through is not None:
        tx.run("DELETE FROM wal WHERE job_id = ? AND seq <= ?", (job_id, b.truncate_wal_through))
    snapshots_deleted = 0
    if b.delete_snapshots:
        row = tx.maybe("SELECT active_snapshot_id FROM jobs WHERE job_id = ?", (job_id,))
        active = None if row is None else row[0]
        if active in b.delete_snapshots:
            raise ActiveSnapshotError(f"snapshot {active} is the active model snapshot")
        snapshots_deleted = tx.delete_in("snapshots", "snapshot_id", job_id, b.delete_snapshots)
    results_deleted = 0
    for op, bound in (("<", b.delete_results_before_ms), (">", b.delete_results_after_ms)):
        if bound is not None:
            for table in RESULT_TABLES:
                results_deleted += tx.run(
                    f"DELETE FROM {table} WHERE job_id = ? AND timestamp_ms {op} ?",
                    (job_id, bound),
                )
    return results_deleted, snapshots_deleted
