"""Security options every Kafka client of a process gets (TLS, SASL), set once at start-up.

Only for an external cluster: the embedded broker listens on loopback in plain text. The same
options go to the aiokafka clients of the API process (forwarder, settle listener, sync feed,
lag monitor, topic admin) and to the workers' Faust app, so one set of settings secures all.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.helpers import create_ssl_context

from streams.settings import Settings

_options: dict[str, Any] = {}


def client_options(settings: Settings) -> dict[str, Any]:
    """aiokafka keyword arguments for ``settings``' security protocol."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    opts: dict[str, Any] = {"security_protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        opts["ssl_context"] = create_ssl_context(
            cafile=settings.kafka_ssl_cafile or None,
            certfile=settings.kafka_ssl_certfile or None,
            keyfile=settings.kafka_ssl_keyfile or None,
        )
    if protocol.startswith("SASL"):
        opts["sasl_mechanism"] = settings.kafka_sasl_mechanism
        opts["sasl_plain_username"] = settings.kafka_sasl_username
        opts["sasl_plain_password"] = settings.kafka_sasl_password
    return opts


def configure(settings: Settings) -> None:
    _options.clear()
    _options.update(client_options(settings))


def options() -> dict[str, Any]:
    """What to pass to every AIOKafkaProducer / Consumer / AdminClient of this process."""
    return dict(_options)


def reader(bootstrap: str, fetch_max_wait_ms: int, **extra: Any) -> AIOKafkaConsumer:
    """A consumer outside any group that reads partitions it is assigned.

    ``fetch_max_wait_ms`` is its wait while records flow: Tansu holds a fetch that long even when
    records arrive meanwhile (``streams.kafka.fetch_wait`` lengthens it while idle).
    """
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=fetch_max_wait_ms,
        **extra,
        **options(),
    )


def faust_credentials(settings: Settings) -> Any:
    """The same security for the workers' Faust app (``broker_credentials``); None = plain."""
    import faust

    opts = client_options(settings)
    if not opts:
        return None
    if settings.kafka_security_protocol == "SSL":
        return faust.SSLCredentials(opts["ssl_context"])
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=settings.kafka_sasl_password,
        mechanism=settings.kafka_sasl_mechanism,
        ssl_context=opts.get("ssl_context"),
    )
