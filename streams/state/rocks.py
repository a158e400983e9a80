"""RocksDB options for every database one process opens, capped together by one figure.

Left at RocksDB's defaults each database keeps a 64 MiB write buffer (a second one while the
first flushes) and its own block cache, and holds every SST's index and bloom filter in memory
outside any cache. A worker opens a store per (store, partition) it owns — ten with two
partitions — and the API process two more (journal, sync log): under a flood that alone is
several hundred MiB per process, and it grows with the data. Here every database of a process
shares one write buffer manager (memtables flush once together they reach it) and one LRU
block cache that also holds indexes and filters, so RocksDB's memory per process is about
``rocksdb_memory_mb`` whatever the number of partitions or the size of the stores.
"""

from __future__ import annotations

from rocksdict import BlockBasedOptions, Cache, Options, WriteBufferManager

DEFAULT_MB = 64
_MIB = 2**20

_budget_mb = DEFAULT_MB
_shared: tuple[WriteBufferManager, Cache] | None = None


def configure(memory_mb: int) -> None:
    """Set this process's RocksDB budget; call before the first database opens."""
    global _budget_mb, _shared
    if _shared is not None and memory_mb != _budget_mb:
        raise RuntimeError("rocks.configure after a database was opened with another budget")
    _budget_mb = max(8, memory_mb)


def _pool() -> tuple[WriteBufferManager, Cache]:
    global _shared
    if _shared is None:
        total = _budget_mb * _MIB
        # Half for memtables (flushes keep them there only briefly), half for reads: the hot
        # path's point lookups mostly miss and are answered by bloom filters held in the cache.
        _shared = (WriteBufferManager(total // 2, False), Cache(total // 2))
    return _shared


def options(bloom: bool = False) -> Options:
    """Options for one database of this process (``raw_mode``: bytes keys and values)."""
    manager, cache = _pool()
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.set_write_buffer_manager(manager)
    # A database's own memtable flushes at this size even when the others are idle; small
    # buffers only mean more, smaller L0 files, which compaction merges in the background.
    opts.set_write_buffer_size(max(_MIB, _budget_mb * _MIB // 8))
    opts.set_max_write_buffer_number(2)
    table = BlockBasedOptions()
    table.set_block_cache(cache)
    table.set_cache_index_and_filter_blocks(True)
    # L0's filters and indexes are read by every lookup: keep them pinned rather than evicted by
    # a scan, at a cost bounded by the few L0 files.
    table.set_pin_l0_filter_and_index_blocks_in_cache(True)
    if bloom:
        table.set_bloom_filter(10, False)
    opts.set_block_based_table_factory(table)
    return opts
