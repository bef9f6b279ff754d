from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bridge.calllog.present import clock, csv_row, mask_number, transcript_text


@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("+15551231234", "+*******1234"),
        ("+442071838750", "+********8750"),
        ("1234", "1234"),
        ("anonymous", "anonymous"),
        ("client:alice", "client:alice"),
        ("", ""),
    ],
)
def test_mask_keeps_the_last_four_digits(number: str, masked: str) -> None:
    assert mask_number(number) == masked


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "00:00.0"),
        (3.24, "00:03.2"),
        (59.96, "01:00.0"),
        (61.06, "01:01.1"),
        (3725.0, "62:05.0"),
        (-1, "00:00.0"),
    ],
)
def test_clock(seconds: float, text: str) -> None:
    assert clock(seconds) == text


def test_transcript_lines() -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    call = {
        "started_at": start,
        "events": [
            {"at": start + timedelta(seconds=3.2), "kind": "caller_transcript", "data": {"text": "Hello?"}},
            {"at": start + timedelta(seconds=3.5), "kind": "dtmf", "data": {"digit": "5"}},
            {
                "at": start + timedelta(seconds=4),
                "kind": "assistant_transcript",
                "data": {"text": "Hi there, how can", "interrupted": True},
            },
            {"at": start + timedelta(seconds=5), "kind": "caller_transcript", "data": {"text": "  "}},
            {
                "at": start + timedelta(seconds=6),
                "kind": "assistant_transcript",
                "data": {
                    "text": "Sure, your",
                    "full_text": "Sure, your order ships today.",
                    "interrupted": True,
                },
            },
            {
                "at": start + timedelta(seconds=7),
                "kind": "caller_spoke",
                "data": {"item_id": "u3", "spoken_ms": 4300, "words": "off"},
            },
            {
                "at": start + timedelta(seconds=8),
                "kind": "operator_action",
                "data": {"operator": "bob", "action": "say", "outcome": "done", "text": "Please hold."},
            },
            {
                "at": start + timedelta(seconds=9),
                "kind": "operator_action",
                "data": {
                    "operator": "alice",
                    "action": "transfer",
                    "outcome": "refused",
                    "number": "+*******1111",
                    "error": "no Twilio credentials are configured (TWILIO_AUTH_TOKEN)",
                },
            },
            {
                "at": start + timedelta(seconds=10),
                "kind": "operator_action",
                "data": {"operator": "bob", "action": "hangup", "outcome": "done"},
            },
        ],
    }
    assert transcript_text(call).splitlines() == [
        "[00:03.2] Caller: Hello?",
        "[00:04.0] Assistant: Hi there, how can [cut off]",
        "[00:06.0] Assistant: Sure, your [cut off; not heard: order ships today.]",
        "[00:07.0] Caller: (spoke 4.3 s, not transcribed)",
        '[00:08.0] Operator bob, say: "Please hold."',
        "[00:09.0] Operator alice, transfer: to +*******1111 (refused: no Twilio credentials are configured "
        "(TWILIO_AUTH_TOKEN))",
        "[00:10.0] Operator bob, hangup",
    ]


def test_csv_cells_cannot_become_formulas_but_numbers_stay_numbers() -> None:
    row = dict.fromkeys(["call_id", "from_number", "to_number", "summary", "disposition"], "")
    row.update(
        call_id="=HYPERLINK(1)",
        from_number="+*******1234",
        to_number="+15551231234",
        summary="+cmd|' /C calc'!A0",
        disposition="@SUM(1)",
    )
    cells = csv_row(row)
    assert "'=HYPERLINK(1)" in cells
    assert "+*******1234" in cells and "+15551231234" in cells
    assert "'+cmd|' /C calc'!A0" in cells and "'@SUM(1)" in cells


def test_a_snippet_shows_the_words_around_what_was_found() -> None:
    from bridge.calllog.present import snippet

    short = "Hi, I'd like a refund."
    assert snippet(short, "refund") == short
    line = (
        "Thanks for waiting. I have looked at your account and I can see the order from last Tuesday, "
        "the one with the blue kettle, and I can offer you a full refund today or a replacement that "
        "ships tomorrow morning, whichever you prefer."
    )
    cut = snippet(line, "FULL REFUND", width=60)
    assert "full refund" in cut and cut.startswith("…") and cut.endswith("…")
    assert len(cut) <= 62
    assert not cut[1].isspace() and cut[1:].split()[0] in line.split()  # cut between words
    assert snippet(line, "thanks", width=60).startswith("Thanks for waiting.")
    assert snippet(line, "prefer", width=60).endswith("whichever you prefer.")
    assert "Straße" in snippet("x " * 80 + "Die Straße ist gesperrt " + "y " * 80, "STRASSE", width=40)
