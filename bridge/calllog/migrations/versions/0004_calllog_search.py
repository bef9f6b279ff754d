"""calls: the caller's intent in its own column, the summary made searchable, the call SID indexed

Revision ID: 0004_calllog_search
Revises: 0003_call_owners
Create Date: 2026-02-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_calllog_search"
down_revision = "0003_call_owners"
branch_labels = None
depends_on = None

# How summaries written before this revision carried the intent: as their last line.
_INTENT_LINE = "\nCaller's intent: "
_BATCH = 500


def upgrade() -> None:
    op.add_column("calls", sa.Column("intent", sa.Text))
    # The summary and intent, casefolded: searched with one LIKE on both databases (like events').
    op.add_column("calls", sa.Column("search_text", sa.Text))
    op.create_index("ix_calls_call_sid", "calls", ["call_sid"])
    _split_intents(op.get_bind())


def _split_intents(bind: sa.Connection) -> None:
    """Move each stored summary's intent line into `intent`, and fill `search_text`, a batch of calls
    at a time (a call log may hold millions)."""
    calls = sa.table(
        "calls", sa.column("call_id"), sa.column("summary"), sa.column("intent"), sa.column("search_text")
    )
    after = ""
    while True:
        rows = bind.execute(
            sa.select(calls.c.call_id, calls.c.summary)
            .where(calls.c.summary.is_not(None), calls.c.call_id > after)
            .order_by(calls.c.call_id)
            .limit(_BATCH)
        ).all()
        if not rows:
            return
        updates = []
        for call_id, stored in rows:
            summary, found, intent = stored.rpartition(_INTENT_LINE)
            if not found:
                summary, intent = stored, ""
            searchable = "\n".join(part for part in (summary.strip(), intent.strip()) if part)
            updates.append(
                {
                    "b_call_id": call_id,
                    "b_summary": summary.strip(),
                    "b_intent": intent.strip() or None,
                    "b_search_text": searchable.casefold() or None,
                }
            )
        bind.execute(
            calls.update()
            .where(calls.c.call_id == sa.bindparam("b_call_id"))
            .values(
                summary=sa.bindparam("b_summary"),
                intent=sa.bindparam("b_intent"),
                search_text=sa.bindparam("b_search_text"),
            ),
            updates,
        )
        after = rows[-1][0]


def downgrade() -> None:
    calls = sa.table("calls", sa.column("summary"), sa.column("intent"))
    # The intent goes back where it was: the summary's last line.
    op.get_bind().execute(
        calls.update()
        .where(calls.c.intent.is_not(None))
        .values(summary=sa.func.coalesce(calls.c.summary, "") + _INTENT_LINE + calls.c.intent)
    )
    op.drop_index("ix_calls_call_sid", table_name="calls")
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("search_text")
        batch.drop_column("intent")
