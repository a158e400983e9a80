"""Many nodes, one service: what lets every ``orderstream serve`` on an external cluster answer
for the whole cluster (membership, forwarding, configuration shared through compacted topics).

With the embedded broker there is one node and none of this runs: files in the data directory
are the configuration, as they always were.
"""
