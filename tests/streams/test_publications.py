"""The publication log: kept with the state, deleted once the hub read it, resent after an epoch."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from streams.state.store import ChangelogEntry, PartitionStore
from streams.sync import publications
from streams.sync.feed import SyncFeed, event_data
from streams.sync.log import NewEvent, SyncLog
from streams.sync.publications import (
    MARGIN_MS,
    MAX_AGE_MS,
    Publication,
    Sweep,
    decode_pubs,
    read_through,
    row,
    row_time,
    sweep,
    write_through,
)

NOW = 1_800_000_000_000
PUB = Publication("orders.changes", 3, b"changes", b"\x91\x01")


def test_row_keeps_what_was_sent_in_time_order() -> None:
    k1, v1 = row([PUB], NOW, "e1")
    k2, _ = row([PUB, PUB], NOW, "e1")
    k3, _ = row([PUB], NOW + 1, "e0")
    assert k1.startswith(publications.PREFIX) and k1 < k2 < k3 < publications.END
    assert row_time(k1) == NOW
    assert decode_pubs(v1) == [PUB]


def _keys(*rows: tuple[int, str]) -> list[bytes]:
    return sorted(row([PUB], at, epoch)[0] for at, epoch in rows)


def test_this_epochs_rows_stay_until_the_hub_has_read_them() -> None:
    old, new = _keys((NOW - 30_000, "e1"), (NOW - 1_000, "e1"))
    kept = sweep([old, new], "e1", {}, NOW)
    assert kept == Sweep([], [], old)  # nothing known: keep, and the next scan starts here
    # the hub read through NOW - 15 s: the older row (30 s) is behind it by more than the margin
    done = sweep([old, new], "e1", {"e1": NOW - 15_000}, NOW)
    assert done == Sweep([old], [], new)


def test_rows_past_max_age_go_even_if_the_hub_never_read_them() -> None:
    (key,) = _keys((NOW - MAX_AGE_MS - 1, "e1"))
    done = sweep([key], "e1", {}, NOW)
    assert done.delete == [key] and done.next_start > key


def test_an_earlier_epochs_unread_rows_are_sent_again() -> None:
    read, unknown, unread, mine, later = _keys(
        (NOW - 60_000, "old"),
        (NOW - 3_000, "older"),  # the hub never said: counts as unread
        (NOW - 2_000, "old"),
        (NOW - 500, "new"),
        (NOW - 400, "new"),
    )
    through = {"old": NOW - 20_000, "new": 0}
    done = sweep(iter([read, unknown, unread, mine, later]), "new", through, NOW)
    assert done == Sweep([read], [unknown, unread], mine)


def test_the_scan_stops_at_this_epochs_first_unread_row() -> None:
    keys = _keys((NOW - 3_000, "e1"), (NOW - 2_000, "e1"))

    def lazily():  # type: ignore[no-untyped-def]
        yield keys[0]
        raise AssertionError("read past the first row that is kept")

    assert sweep(lazily(), "e1", {}, NOW) == Sweep([], [], keys[0])


@given(
    st.lists(
        st.tuples(st.integers(0, 2 * MAX_AGE_MS), st.sampled_from(["a", "b", "c"])), max_size=40
    ),
    st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers(0, 2 * MAX_AGE_MS)),
)
def test_nothing_unread_is_dropped_and_nothing_read_is_resent(
    ages: list[tuple[int, str]], ago: dict[str, int]
) -> None:
    """Earlier epochs' rows all precede this epoch's (as in a store: resent rows are written
    anew). Every row before the stop is deleted (read or too old) or resent (unread, earlier
    epoch); the stop is this epoch's first unread row; nothing after it is touched."""
    now = 3 * MAX_AGE_MS
    earlier = sorted(row([PUB], now - a, e)[0] for a, e in ages if e != "a")
    mine = sorted(row([PUB], now - a // 4, "a")[0] for a, e in ages if e == "a")
    if earlier and mine and row_time(mine[0]) <= row_time(earlier[-1]):
        return
    keys = earlier + mine
    through = {e: now - t for e, t in ago.items()}
    done = sweep(keys, "a", through, now)
    decided = set(done.delete) | set(done.resend)
    for key in keys:
        at, epoch = row_time(key), key[11:43].rstrip().decode()
        read = epoch in through and at < through[epoch] - MARGIN_MS
        too_old = at < now - MAX_AGE_MS
        if key >= done.next_start:
            assert epoch == "a" and key not in decided
            assert key == done.next_start or key > done.next_start
        elif read or too_old:
            assert key in done.delete
        else:
            assert epoch != "a" and key in done.resend
    stop = [k for k in keys if k >= done.next_start]
    if stop:
        at = row_time(stop[0])
        assert not (at < now - MAX_AGE_MS or ("a" in through and at < through["a"] - MARGIN_MS))


def test_through_file_round_trip_and_garbage(tmp_path: Path) -> None:
    assert read_through(tmp_path) == {}
    write_through(tmp_path, {f"e{i}": i for i in range(40)})
    got = read_through(tmp_path)
    assert list(got) == [f"e{i}" for i in range(40 - publications.KEEP_EPOCHS, 40)]
    publications.through_path(tmp_path).write_text("{not json")
    assert read_through(tmp_path) == {}


def _feed(tmp_path: Path, name: str = "sync") -> SyncFeed:
    log = SyncLog(tmp_path / name, memory_events=1000, retention_events=10_000)
    settings: Any = SimpleNamespace(data_path=tmp_path, partitions=2)
    return SyncFeed(log, settings)


def test_a_new_epoch_freezes_the_old_read_position_and_drops_copies_it_holds(
    tmp_path: Path,
) -> None:
    feed = _feed(tmp_path)
    feed.epoch = "e1"
    held = [NewEvent("order", f"o{i}", "", "shopify", b'{"v":%d}' % i) for i in range(5)]
    feed.log.append(held, {})
    assert event_data(feed.log.read(1, 1)[0]) == b'{"v":0}'
    for tp in feed._tps():
        feed._through[tp] = NOW - (tp.partition * 1000)
    assert feed.read_through() == NOW - 1000
    feed.epoch = "e2"
    assert read_through(tmp_path) == {"e1": NOW - 1000, "e2": 0}
    # a resent copy of an event the log holds is dropped; a new one is kept
    assert hash(b'{"v":3}') in feed._known and hash(b'{"v":9}') not in feed._known
    # a restarted hub remembers the earlier epochs' positions from the file
    assert _feed(tmp_path, "sync2")._epochs["e1"] == NOW - 1000


def test_an_epoch_read_to_its_end_is_dropped_not_sent_again(tmp_path: Path) -> None:
    """A broker swap: the old broker's workers are gone and the hub read its change topics to
    the end, so every row of that epoch - however recent - is deleted, and the hub expects no
    copies (nothing to check them against)."""
    feed = _feed(tmp_path)
    feed.epoch = "e1"
    feed.log.append([NewEvent("order", "o1", "", "shopify", b'{"v":1}')], {})
    feed.read_all()
    feed.epoch = "e2"
    assert read_through(tmp_path) == {"e1": publications.ALL_READ, "e2": 0}
    assert not feed._known
    recent = _keys((NOW - 1, "e1"), (NOW, "e1"))
    assert sweep(recent, "e2", read_through(tmp_path), NOW) == Sweep(
        recent, [], recent[-1] + b"\x00"
    )
    # the next epoch change is an ordinary one again (a broker loss: resend, drop copies)
    feed.epoch = "e3"
    assert read_through(tmp_path)["e2"] == 0 and hash(b'{"v":1}') in feed._known


def test_a_sweep_over_a_real_store_reads_only_what_it_decides(tmp_path: Path) -> None:
    """On RocksDB: rows around other prefixes, the sweep pulls keys lazily and stops at this
    epoch's first unread row; the resent rows' values come back whole."""
    store = PartitionStore(tmp_path, "orders", 0)
    try:
        old = [row([PUB._replace(value=b"%d" % i)], NOW - 9_000 + i, "old") for i in range(3)]
        mine = [row([PUB], NOW - 1_000 + i, "new") for i in range(3)]
        other = [(b"os_1", b"record"), (b"pb", b"not a row"), (b"pb;", b"after the range")]
        store.write(ChangelogEntry([*old, *mine, *other], "t", None), None)
        pulled: list[bytes] = []

        def keys():  # type: ignore[no-untyped-def]
            for k in store.iter_keys(publications.PREFIX, publications.END):
                pulled.append(k)
                yield k

        done = sweep(keys(), "new", {"old": NOW - 60_000}, NOW)
        assert done == Sweep([], [k for k, _ in old], mine[0][0])
        assert pulled == [k for k, _ in old] + [mine[0][0]]
        values = store.get_many(done.resend)
        assert [p.value for v in values for p in decode_pubs(v) or []] == [b"0", b"1", b"2"]
    finally:
        store.close()
