"""How a benchmark table shows a ratio of ours over PyLate: the setups of its two rows checked under the
comparison's label (:func:`bench.common.check_setups`) and the declared differences named, or, for a record
from before setups were recorded, what its rows do record."""

from __future__ import annotations

from typing import Any

from bench.common import check_setups, differences_text

#: Below a table whose paired rows carry no setups (records from before they were recorded).
NOT_RECORDED = (
    "Setup not recorded for {rows}: measured before each side's setup (threads, versions) was recorded; "
    "a ratio names the precision difference its rows record, and no other difference is known either way."
)


def setup_note(row: dict[str, Any], what: str, ours: Any = None, peer: Any = None) -> tuple[str, bool]:
    """What a ratio of ``row``'s two sides is shown with, and whether their setups were recorded.

    Recorded setups (``row["setups"]``, or ``ours`` / ``peer``) go through
    :func:`bench.common.check_setups` under the row's ``comparison`` label (like for like when it has
    none), which refuses an undeclared difference; the note names the declared ones. A row measured before
    setups were recorded: the precision difference its sides record, if any; the rest is not known.
    """
    setups = row.get("setups") or {}
    ours, peer = setups.get("ours", ours), setups.get("peer", peer)
    if ours and peer:
        comparison, declared = row.get("comparison", "like for like"), row.get("declared", ())
        return differences_text(check_setups(ours, peer, comparison, declared, what=what)), True
    mine, theirs = (row.get(side) for side in ("ours", "peer"))  # a trainer record's "peer" is a str
    mine, theirs = (side.get("precision") if isinstance(side, dict) else None for side in (mine, theirs))
    return (f"precision {mine} vs {theirs}" if mine and theirs and mine != theirs else ""), False
