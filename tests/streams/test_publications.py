"""The publication log: kept with the state, deleted once the hub read it, resent after an epoch."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from streams import publications
from streams.publications import (
    MARGIN_MS,
    MAX_AGE_MS,
    Publication,
    decode_pubs,
    read_through,
    row,
    row_time,
    sweep,
    write_through,
)
from streams.sync_feed import SyncFeed, event_data
from streams.sync_log import NewEvent, SyncLog

NOW = 1_800_000_000_000
PUB = Publication("orders.changes", 3, b"changes", b"\x91\x01")


def test_row_keeps_what_was_sent_in_time_order() -> None:
    k1, v1 = row([PUB], NOW, "e1")
    k2, _ = row([PUB, PUB], NOW, "e1")
    k3, _ = row([PUB], NOW + 1, "e1")
    assert k1.startswith(publications.PREFIX) and k1 < k2 < k3 < publications.END
    assert row_time(k1) == NOW
    assert decode_pubs(v1) == [PUB]


def test_this_epochs_rows_stay_until_the_hub_has_read_them() -> None:
    rows = [row([PUB], NOW - 30_000, "e1"), row([PUB], NOW - 1_000, "e1")]
    kept = sweep(rows, "e1", {}, NOW)
    assert kept.resend == [] and kept.updates == [] and kept.first_kept == rows[0][0]
    # the hub read through NOW - 15 s: the older row (30 s) is behind it by more than the margin
    done = sweep(rows, "e1", {"e1": NOW - 15_000}, NOW)
    assert done.updates == [(rows[0][0], None)] and done.first_kept == rows[1][0]
    assert done.resend == []


def test_rows_past_max_age_go_even_if_the_hub_never_read_them() -> None:
    rows = [row([PUB], NOW - MAX_AGE_MS - 1, "e1")]
    done = sweep(rows, "e1", {}, NOW)
    assert done.updates == [(rows[0][0], None)] and done.first_kept > rows[0][0]


def test_an_earlier_epochs_unread_rows_are_sent_again_as_rows_of_this_epoch() -> None:
    other = Publication("stock.changes", 1, b"stock_change", b"x")
    read = row([PUB], NOW - 60_000, "old")
    unread = row([PUB, other], NOW - 2_000, "old")
    unknown = row([other], NOW - 3_000, "older")  # the hub never said: counts as unread
    mine = row([PUB], NOW - 500, "new")
    through = {"old": NOW - 20_000, "new": 0}
    done = sweep(sorted([read, unread, unknown, mine]), "new", through, NOW)
    assert sorted(done.resend) == sorted([other, PUB, other])
    deleted = {k for k, v in done.updates if v is None}
    assert deleted == {read[0], unread[0], unknown[0]}
    new_key, new_value = next((k, v) for k, v in done.updates if v is not None)
    assert row_time(new_key) == NOW and sorted(decode_pubs(new_value)) == sorted(done.resend)
    # the next sweep on this epoch keeps them (the hub has not read them yet), resends nothing
    again = sweep([mine, (new_key, new_value)], "new", through, NOW + 5_000)
    assert again.resend == [] and again.updates == []


@given(
    st.lists(
        st.tuples(st.integers(0, 2 * MAX_AGE_MS), st.sampled_from(["a", "b", "c"])), max_size=40
    ),
    st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers(0, 2 * MAX_AGE_MS)),
)
def test_nothing_unread_is_dropped_and_nothing_read_is_resent(
    ages: list[tuple[int, str]], through: dict[str, int]
) -> None:
    """Every row is either kept (this epoch, unread), resent (earlier epoch, unread) or deleted
    (read with margin, or too old); the first kept key bounds the next scan."""
    now = 3 * MAX_AGE_MS
    rows = sorted(
        row([PUB._replace(value=b"%d" % i)], now - age, e) for i, (age, e) in enumerate(ages)
    )
    through = {e: now - t for e, t in through.items()}
    done = sweep(rows, "a", through, now)
    deleted = {k for k, v in done.updates if v is None}
    resent = {p.value for p in done.resend}
    for key, value in rows:
        at, epoch = row_time(key), value[:32].rstrip().decode()
        read = epoch in through and at < through[epoch] - MARGIN_MS
        too_old = at < now - MAX_AGE_MS
        pub = decode_pubs(value)[0].value
        if read or too_old:
            assert key in deleted and pub not in resent
        elif epoch == "a":
            assert key not in deleted and pub not in resent
            assert done.first_kept is not None and done.first_kept <= key
        else:
            assert key in deleted and pub in resent


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
