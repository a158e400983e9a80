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
from rocksdict import Rdict

from streams.state import rocks
from streams.sync.cursor import IDX_BITS, Cursor, CursorError, parse, position, source
from streams.sync.log import BATCH_PREFIX, NewEvent, SyncEvent, SyncLog

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


def _check_every_prefix(a: SyncLog, b: SyncLog, per_tp: list[list[list[tuple[int, int, int]]]]):
    """For every prefix of log A's stream: resumed on log B, exactly the rest, each partition
    in its order."""
    everything = sorted(f"{tp}-{o}-{j}" for msgs in per_tp for m in msgs for tp, o, j in m)
    on_a = a.read(1, 1_000_000)
    cursor = Cursor(EPOCH, [0] * TPS)
    for k in range(len(on_a) + 1):
        if k:
            cursor.step(on_a[k - 1])
        seen = [_name(e) for e in on_a[:k]]
        rest = _stream_from(b, cursor.format())
        assert sorted(seen + rest) == everything, k  # nothing missing, nothing twice
        for tp in range(TPS):
            mine = [n for n in rest if n.startswith(f"{tp}-")]
            keyed = [tuple(int(x) for x in n.split("-")[1:]) for n in mine]
            assert keyed == sorted(keyed)


def _pair(tmp: str, per_tp: list[list[list[tuple[int, int, int]]]], seed: int) -> list[SyncLog]:
    rng = random.Random(seed)
    logs = []
    for name in ("a", "b"):
        log = SyncLog(Path(tmp) / name, 1000, 100_000, tps=TPS)
        log.set_epoch(EPOCH)
        _fill(log, per_tp, rng)
        logs.append(log)
    return logs


@settings(max_examples=40, deadline=None)
@given(sizes=sizes_st, seed=st.integers(0, 2**32))
def test_a_position_from_one_log_resumes_on_another_without_gap_or_duplicate(
    sizes: list[list[int]], seed: int
) -> None:
    per_tp = _messages(sizes)
    with tempfile.TemporaryDirectory() as tmp:
        a, b = _pair(tmp, per_tp, seed)
        _check_every_prefix(a, b, per_tp)
        a.close()
        b.close()


@settings(max_examples=25, deadline=None)
@given(
    sizes=sizes_st,
    seed=st.integers(0, 2**32),
    kept=st.integers(0, 6),
    where=st.sampled_from(["memory", "disk", "none"]),
)
def test_the_start_is_found_from_memory_from_disk_or_from_the_events(
    sizes: list[list[int]], seed: int, kept: int, where: str
) -> None:
    """The same, whether the start cursors are in memory (only the newest ``kept``), only on
    disk (after a restart), or missing (a log written before they were kept)."""
    per_tp = _messages(sizes)
    with tempfile.TemporaryDirectory() as tmp:
        a, b = _pair(tmp, per_tp, seed)
        if where != "memory":
            b.close()
            if where == "none":
                db = Rdict(str(Path(tmp) / "b"), rocks.options())
                db.delete_range(BATCH_PREFIX, BATCH_PREFIX + b"\xff")
                db.close()
            b = SyncLog(Path(tmp) / "b", 1000, 100_000, tps=TPS)
        else:
            del b._starts[: max(0, len(b._starts) - kept)]
        _check_every_prefix(a, b, per_tp)
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


vectors_st = st.integers(1, 24).flatmap(
    lambda n: st.lists(
        st.tuples(st.integers(0, 2**36 - 1), st.integers(0, 2**IDX_BITS - 1)),
        min_size=n,
        max_size=n,
    )
)


@given(vector=vectors_st, epoch=st.text("0123456789abcdef", min_size=1, max_size=40))
def test_any_position_round_trips_through_its_text(vector: list[tuple[int, int]], epoch: str):
    c = Cursor(epoch, [position(o, i) for o, i in vector])
    text = c.format()
    assert text.startswith("c1.") and "\n" not in text and " " not in text
    again = parse(text, epoch, len(vector))
    assert again is not None and again.next == c.next and again.format() == text


@given(
    a=st.tuples(st.integers(0, 2**36 - 1), st.integers(0, 2**IDX_BITS - 1)),
    b=st.tuples(st.integers(0, 2**36 - 1), st.integers(0, 2**IDX_BITS - 1)),
)
def test_positions_order_as_offset_then_index(a: tuple[int, int], b: tuple[int, int]) -> None:
    assert (position(*a) < position(*b)) == (a < b)
    assert (position(*a) == position(*b)) == (a == b)


@given(
    steps=st.lists(
        st.tuples(st.integers(0, TPS - 1), st.integers(0, 2**36 - 1), st.integers(0, 50)),
        max_size=40,
    )
)
def test_the_running_text_is_the_text_of_the_vector(steps: list[tuple[int, int, int]]) -> None:
    """A subscriber updates one component per event; the text is always the whole vector's,
    and only grows per partition (a seen position never counts as unseen again)."""
    c = Cursor(EPOCH, [0] * TPS)
    for tp, off, idx in steps:
        before = list(c.next)
        ev = SyncEvent(0, "order", "", "", "", b"", source(tp, off, idx))
        c.step(ev)
        assert c.delivered(ev)
        assert all(n >= m for n, m in zip(c.next, before, strict=True))
        assert c.format() == Cursor(EPOCH, c.next).format()


def test_a_sparse_partition_does_not_make_the_resume_read_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One partition changes rarely: its previous event may be far back, the start is not."""
    log = SyncLog(tmp_path / "s", 1000, 1_000_000, tps=TPS)
    log.set_epoch(EPOCH)
    log.append([NewEvent("stock", "", "k", "", b"1", source(3, 0, 0))], {})
    for off in range(0, 50_000, 500):
        log.append(
            [
                NewEvent("order", f"0-{o}", "", "c", b"1", source(0, o, 0))
                for o in range(off, off + 500)
            ],
            {},
        )
    seen = log.cursor_now()
    new = log.append([NewEvent("stock", "", "k", "", b"2", source(3, 1, 0))], {})[0]
    reads: list[int] = []
    real_read = log.read
    monkeypatch.setattr(
        log, "read", lambda start, limit: reads.append(limit) or real_read(start, limit)
    )
    for restarted in (False, True):
        start, cursor, complete = log.start_for(seen)
        assert (start, complete, reads) == (new.seq, True, [])
        assert not cursor.delivered(new)
        if not restarted:  # from the stored start cursors
            log._starts.clear()


def _seen_through(last: int) -> Cursor:
    """The position of a client that saw offsets 0..``last`` (offset o on partition o % TPS)."""
    c = Cursor(EPOCH, [0] * TPS)
    c.advance([SyncEvent(0, "", "", "", "", b"", source(o % TPS, o, 0)) for o in range(last + 1)])
    return c


def test_a_position_older_than_the_log_keeps_resumes_with_a_reset(tmp_path: Path) -> None:
    log = SyncLog(tmp_path / "s", 1000, 2000, tps=TPS)
    log.set_epoch(EPOCH)
    for off in range(0, 6000, 1000):
        changes = [
            NewEvent("order", f"{o}", "", "c", b"1", source(o % TPS, o, 0))
            for o in range(off, off + 1000)
        ]
        log.append(changes, {})
    assert log.oldest == 4001  # offsets 4000.. are kept
    for last, complete in [(-1, False), (3998, False), (3999, True), (5000, True), (5999, True)]:
        start, cursor, whole = log.start_for(_seen_through(last).format())
        assert whole == complete, last  # not whole: a reset notice, some of it is gone
        rest = [e.order_id for e in log.read(start, 10_000) if not cursor.delivered(e)]
        assert rest == [str(o) for o in range(max(last + 1, 4000), 6000)], last
