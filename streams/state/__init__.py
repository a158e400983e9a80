"""Local state: RocksDB partition stores with their changelogs, and the RocksDB options (one
memory cap) shared by every database a process opens.
"""
