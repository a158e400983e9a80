from __future__ import annotations

import ssl

import pytest

from streams.kafka.client import client_options
from streams.settings import SettingsError, load_settings


def test_plaintext_adds_nothing_and_sasl_ssl_passes_everything_through() -> None:
    assert client_options(load_settings(None, {})) == {}
    s = load_settings(
        None,
        {
            "broker": "kafka://kafka-1:9093",
            "kafka_security_protocol": "SASL_SSL",
            "kafka_sasl_mechanism": "SCRAM-SHA-512",
            "kafka_sasl_username": "orderstream",
            "kafka_sasl_password": "pw",
        },
    )
    opts = client_options(s)
    assert opts["security_protocol"] == "SASL_SSL"
    assert isinstance(opts["ssl_context"], ssl.SSLContext)
    assert (opts["sasl_mechanism"], opts["sasl_plain_username"]) == ("SCRAM-SHA-512", "orderstream")


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"kafka_security_protocol": "SSL"}, "kafka_security_protocol"),  # embedded broker
        ({"broker": "kafka://h:1", "kafka_security_protocol": "TLS"}, "kafka_security_protocol"),
        ({"broker": "kafka://h:1", "kafka_security_protocol": "SASL_SSL"}, "kafka_sasl_username"),
        ({"broker": "kafka://h:1", "kafka_sasl_mechanism": "GSSAPI"}, "kafka_sasl_mechanism"),
        ({"memory_budget_mb": 100}, "memory_budget_mb"),
        ({"auth": "maybe"}, "auth"),
    ],
)
def test_bad_security_settings_name_the_key(overrides: dict, key: str) -> None:
    with pytest.raises(SettingsError, match=key):
        load_settings(None, overrides)
