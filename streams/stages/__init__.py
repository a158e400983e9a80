"""One module per pipeline stage: ingest -> normalise -> (dedup, reserve) -> order state -> sync.

A stage is a plain class: ``process`` takes one envelope and returns what to write and send; the
Faust glue in ``streams.app`` does the I/O. Later stages (dedup, reservation, sync) slot in between
normalise and order state as their own modules, each owning its output topic.
"""
