"""Calls between nodes: ask another node's workers, find an order in another node's journal.

A node never talks to another node's workers directly: those listen on loopback only. It calls
the other node's HTTP API on ``/internal/cluster/...`` with the cluster secret, and that node
asks its own workers. So a worker's internal port is never exposed, and one secret covers every
call between nodes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import msgspec

from streams.cluster.members import NodeRecord

SECRET_HEADER = "X-Orderstream-Cluster"
WORKERS_PATH = "/internal/cluster/workers"
ACCEPTED_PATH = "/internal/cluster/accepted/"
NO_ANSWER = 599  # stands for "did not answer", as for a local worker


class WorkerQuery(msgspec.Struct):
    """What one node asks of another's workers: a GET (``body`` None) or a POST."""

    path: str
    body: bytes | None = None


Answers = list[tuple[int, bytes]]
query_codec = msgspec.msgpack.Decoder(WorkerQuery)
answers_codec = msgspec.msgpack.Decoder(list[tuple[int, bytes]])
_enc = msgspec.msgpack.Encoder()


def encode_answers(answers: Answers) -> bytes:
    return _enc.encode(answers)


class Peers:
    def __init__(self, secret: Callable[[], str], timeout_s: float = 5.0) -> None:
        self.secret = secret
        self.timeout_s = timeout_s
        self.session: aiohttp.ClientSession | None = None

    def _session(self) -> aiohttp.ClientSession:
        if self.session is None:
            self.session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s, connect=1.0)
            )
        return self.session

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def workers(self, node: NodeRecord, path: str, body: bytes | None = None) -> Answers:
        """Every answer of ``node``'s workers; one NO_ANSWER when the node did not answer."""
        try:
            async with self._session().post(
                node.url + WORKERS_PATH,
                data=_enc.encode(WorkerQuery(path, body)),
                headers={SECRET_HEADER: self.secret()},
            ) as resp:
                if resp.status != 200:
                    return [(NO_ANSWER, b"")]
                return answers_codec.decode(await resp.read())
        except (TimeoutError, aiohttp.ClientError, msgspec.DecodeError, OSError):
            return [(NO_ANSWER, b"")]

    async def all_workers(
        self, nodes: list[NodeRecord], path: str, body: bytes | None = None
    ) -> Answers:
        out: Answers = []
        for answers in await asyncio.gather(*(self.workers(n, path, body) for n in nodes)):
            out += answers
        return out

    async def accepted(self, nodes: list[NodeRecord], order_id: str) -> bytes | None:
        """An order durable in another node's journal that no stage has recorded yet."""

        async def one(node: NodeRecord) -> bytes | None:
            try:
                async with self._session().get(
                    node.url + ACCEPTED_PATH + order_id, headers={SECRET_HEADER: self.secret()}
                ) as resp:
                    return await resp.read() if resp.status == 200 else None
            except (TimeoutError, aiohttp.ClientError, OSError):
                return None

        for found in await asyncio.gather(*(one(n) for n in nodes)):
            if found is not None:
                return found
        return None
