"""The journal's in-memory aids (live map, recent entries) agree with what RocksDB holds."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from streams.ingest import journal as journal_mod
from streams.ingest.journal import IngestJournal, JournalEntry, JournalFull


def _entries(n: int, tag: str = "o") -> list[JournalEntry]:
    return [JournalEntry("shopify", f"{tag}{i}".encode(), 1, f"id{tag}{i}") for i in range(n)]


def _run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_recent_reads_match_rocksdb(tmp_path: Path) -> None:
    async def main() -> None:
        j = IngestJournal(tmp_path / "j", 1000, fsync=False)
        seqs = await asyncio.gather(*(j.append(_entries(3, str(k))) for k in range(5)))
        assert sorted(s for group in seqs for s in group) == list(range(1, 16))
        assert j.durable_seq == 15 and j.depth == 15
        assert j.settle([2, 2, 7, 99]) == 2  # repeats and unknown seqs are harmless
        assert j.depth == 13
        for after in (0, 1, 5):
            for limit in (1, 4, 100):
                assert j.read_after(after, limit) == j._read_db(after, limit)
        assert [s for s, _ in j.read_after(0, 100)] == [1, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15]
        # the forwarder moved past 10: memory drops those, a replay falls back to RocksDB
        assert j.read_after(10, 100) == j._read_db(10, 100)
        assert j._recent[0][0] == 10
        assert j.read_after(0, 100) == j._read_db(0, 100)
        assert j.read_after(14, 100) == j._read_db(14, 100)
        assert j.read_after(15, 100) == [] and not j._recent
        assert j._read_db(2, 1) == [(3, _entries(3, "0")[2])]
        await j.close()

    _run(main())


def test_restart_rebuilds_live_map(tmp_path: Path) -> None:
    async def first() -> None:
        j = IngestJournal(tmp_path / "j", 1000, fsync=True)
        await j.append(_entries(10))
        assert j.settle([1, 2, 5, 10]) == 4
        await j.close()

    async def second() -> None:
        j = IngestJournal(tmp_path / "j", 1000, fsync=True)
        assert j.depth == 6 and j.next_seq == 10
        assert [s for s, _ in j.read_after(0, 100)] == [3, 4, 6, 7, 8, 9]
        assert j.settle([3, 4, 5, 10]) == 2  # 5 and 10 are gone already
        seqs = await j.append(_entries(2, "n"))
        assert seqs == [10, 11]  # the highest seq on disk was 9
        assert j.settle([10]) == 1
        assert [s for s, _ in j.read_after(0, 100)] == [6, 7, 8, 9, 11]
        assert j.read_after(5, 100) == j._read_db(5, 100)
        await j.close()

    _run(first())
    _run(second())


def test_full_and_failed_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        j = IngestJournal(tmp_path / "j", 5, fsync=False)
        await j.append(_entries(2))
        with pytest.raises(JournalFull):
            await j.append(_entries(4))
        real = j.db

        class Failing:
            def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
                return getattr(real, name)

            def write(self, *a: object) -> None:
                raise OSError("disk full")

        j.db = Failing()  # type: ignore[assignment]
        with pytest.raises(OSError):
            await j.append(_entries(2, "x"))
        j.db = real
        assert j.depth == 2
        await j.append(_entries(1, "y"))  # seqs 3, 4 were never written
        assert [s for s, _ in j.read_after(0, 10)] == [1, 2, 5]
        assert j.settle([3, 4, 5]) == 1 and j.depth == 2
        await j.close()

    _run(main())


def test_recent_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal_mod, "RECENT_MAX", 10)

    async def main() -> None:
        j = IngestJournal(tmp_path / "j", 1000, fsync=False)
        for k in range(10):
            await j.append(_entries(4, str(k)))
        assert j._recent_count <= 10
        assert j.read_after(0, 100) == j._read_db(0, 100)
        assert len(j.read_after(30, 100)) == 10
        await j.close()

    _run(main())


def test_live_through_counts_unsettled_entries_up_to_a_seq(tmp_path: Path) -> None:
    """What the forwarder's window is measured with: forwarded (<= cursor) and not recorded."""

    async def main() -> None:
        j = IngestJournal(tmp_path / "j", 1000, fsync=False)
        await j.append(_entries(10))
        assert [j.live_through(s) for s in (0, 1, 5, 10, 50)] == [0, 1, 5, 10, 10]
        j.settle([1, 2, 3, 7])
        assert [j.live_through(s) for s in (3, 5, 10)] == [0, 2, 6]
        assert j.live_through(10) == j.depth
        await j.close()

    _run(main())


def test_an_accepted_order_is_found_until_it_is_settled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_mod, "RECENT_IDS_MAX", 5)

    async def main() -> None:
        j = IngestJournal(tmp_path / "j", 1000, fsync=False)
        await j.append(_entries(3, "a"))
        again = await j.append([JournalEntry("shopify", b"newer", 2, "ida1")])  # a later copy
        j.read_after(4, 100)  # forwarded: not in the forwarder's memory any more, still found
        found = j.find_recent("ida1")
        assert found is not None and found[0] == again[0] and found[1].payload == b"newer"
        assert j.find_recent("nope") is None
        j.settle(again)  # the newest copy recorded: the order is no longer "accepted"
        assert j.find_recent("ida1") is None
        await j.append(_entries(5, "b"))  # only the newest 5 ids are kept
        assert j.find_recent("ida0") is None and j.find_recent("idb0") is not None
        await j.close()

    _run(main())
