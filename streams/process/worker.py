"""Entry point of one Faust worker process (``orderstream worker``)."""

from __future__ import annotations

import asyncio
import logging

import faust
import uvloop

from streams.kafka import client as kafka_client
from streams.kafka import fetch_wait
from streams.kafka.cluster import ensure_cluster, wait_for_broker
from streams.kafka.topics import service_topics
from streams.settings import Settings

log = logging.getLogger("orderstream.worker")
STANDBY_BUSY_S = 120.0


def run_worker(settings: Settings, web_port: int, standby: bool = False) -> None:
    uvloop.install()
    kafka_client.configure(settings)
    if standby:
        # Started beside the old broker's workers: its partitions' first records come when the
        # swap sends them, and an idle consumer's 1 s fetch wait would hold them that long.
        fetch_wait.stay_busy_for(STANDBY_BUSY_S)

    async def prepare() -> str:
        await wait_for_broker(settings.bootstrap_servers, timeout=60)
        return await ensure_cluster(
            settings.bootstrap_servers,
            service_topics(settings),
        )

    epoch = asyncio.run(prepare())
    from streams.app import Pipeline  # Faust import cost only in worker processes

    pipeline = Pipeline(settings, epoch, web_port)
    worker = faust.Worker(
        pipeline.app,
        loglevel=settings.log_level,
        quiet=True,
        redirect_stdouts=False,
        override_logging=False,
    )
    # Faust's start-up spinner writes backspaces and cursor codes even when its output is a
    # file (the service log): never wanted here
    worker.spinner = None
    log.info("worker on broker %s, epoch %s, web :%d", settings.broker_url, epoch, web_port)
    try:
        worker.execute_from_commandline()
    finally:
        pipeline.stores.close_all()
