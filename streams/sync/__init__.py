"""The sync hub: reads the change topics into a numbered local log and pushes it to subscribers.

SSE/WebSocket subscribers and webhooks are fed from one place, with per-epoch read positions.
"""
