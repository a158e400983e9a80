"""Pure domain of orderstream: canonical order model, channel adapters and rules.

Nothing here imports Faust or anything under ``streams``; every function is a plain function over
msgspec Structs so it can be tested without a broker.
"""
