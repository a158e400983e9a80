"""Cluster positions: a position taken on one node's sync log resumes on another's exactly.

Two logs get the same per-partition streams of changes, interleaved differently (as two nodes'
fetches interleave them); for any point of log A's stream, resuming on log B from the position
reached there yields exactly the rest: no gap, no duplicate, each partition in order.
"""

from __future__ import annotations

import itertools
import random
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.sync.cursor import Cursor, CursorError, parse, source
from streams.sync.log import NewEvent, SyncEvent, SyncLog

TPS = 4
EPOCH = "e1234567890"


def _messages(sizes: list[list[int]]) -> list[list[tuple[int, int, int]]]:
    """Per partition, its messages: each a list of (tp, offset, index) changes."""
    return [
        [[(tp, off, j) for j in range(n)] for off, n in enumerate(msgs)]
        for tp, msgs in enumerate(sizes)
    ]


def _fill(log: SyncLog, per_tp: list[list[list[tuple[int, int, int]]]], rng: random.Random) -> None:
    """Append whole messages in a random interleaving that keeps each partition's order,
    a few messages per append (one fetch)."""
    queues = [list(msgs) for msgs in per_tp]
    while any(queues):
        fetch: list[NewEvent] = []
        for _ in range(rng.randint(1, 4)):
            live = [q for q in queues if q]
            if not live:
                break
            for tp, off, j in rng.choice(live).pop(0):
                name = f"{tp}-{off}-{j}"
                fetch.append(
                    NewEvent("order", name, "", "c", b'"%s"' % name.encode(), source(tp, off, j))
                )
        log.append(fetch, {})


def _name(ev: SyncEvent) -> str:
    return ev.order_id


def _stream_from(log: SyncLog, text: str) -> list[str]:
    start, cursor, complete = log.start_for(text)
    assert complete
    out = []
    for ev in log.read(start, 1_000_000):
        if not cursor.delivered(ev):
            cursor.step(ev)
            out.append(_name(ev))
    return out


sizes_st = st.lists(st.lists(st.integers(1, 4), max_size=6), min_size=TPS, max_size=TPS)


@settings(max_examples=40, deadline=None)
@given(sizes=sizes_st, seed=st.integers(0, 2**32), cut=st.floats(0, 1))
def test_a_position_from_one_log_resumes_on_another_without_gap_or_duplicate(
    sizes: list[list[int]], seed: int, cut: float
) -> None:
    per_tp = _messages(sizes)
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        a = SyncLog(Path(tmp) / "a", 1000, 100_000, tps=TPS)
        b = SyncLog(Path(tmp) / "b", 1000, 100_000, tps=TPS)
        for log in (a, b):
            log.set_epoch(EPOCH)
            _fill(log, per_tp, rng)
        on_a = a.read(1, 1_000_000)
        k = int(cut * len(on_a))
        cursor = Cursor(EPOCH, [0] * TPS)
        cursor.advance(on_a[:k])
        seen = [_name(e) for e in on_a[:k]]
        rest = _stream_from(b, cursor.format())
        everything = sorted(f"{tp}-{o}-{j}" for msgs in per_tp for m in msgs for tp, o, j in m)
        assert sorted(seen + rest) == everything  # nothing missing, nothing twice
        for tp in range(TPS):  # and each partition in its order
            mine = [n for n in rest if n.startswith(f"{tp}-")]
            keyed = [tuple(int(x) for x in n.split("-")[1:]) for n in mine]
            assert keyed == sorted(keyed)
        a.close()
        b.close()


def test_the_text_form_round_trips_and_names_what_is_wrong() -> None:
    c = Cursor(EPOCH, [0, 5 << 20 | 3, 1 << 40, 7])
    again = parse(c.format(), EPOCH, TPS)
    assert again is not None and again.next == c.next
    assert parse(c.format(), "another-epoch", TPS) is None  # another broker epoch
    for bad, why in [
        ("17", "not a resume id"),
        ("c1.e1234567.1.2", "names 2 topic partitions, this service has 4"),
        ("c1.e1234567.1.2.zz.4", "malformed"),
    ]:
        with pytest.raises(CursorError, match=why):
            parse(bad, EPOCH, TPS)


def test_positions_survive_a_restart_and_a_new_epoch_starts_afresh(tmp_path: Path) -> None:
    log = SyncLog(tmp_path / "s", 1000, 100_000, tps=TPS)
    log.set_epoch(EPOCH)
    _fill(log, _messages([[2, 1], [3], [], [1]]), random.Random(1))
    now = log.cursor_now()
    log.close()
    log = SyncLog(tmp_path / "s", 1000, 100_000, tps=TPS)
    assert log.cursor_now() == now and log.start_for(now)[0] == log.next_seq  # nothing new
    log.set_epoch("f" * 12)  # the broker came back empty: offsets start again
    _fill(log, _messages([[1], [], [], []]), random.Random(2))
    start, cursor, complete = log.start_for(now)  # an old epoch's position: this epoch's all
    assert complete and [e.order_id for e in log.read(start, 100)] == ["0-0-0"]
    assert list(itertools.chain(cursor.next)) == [0] * TPS
