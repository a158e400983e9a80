from __future__ import annotations

import hashlib
import hmac

from hypothesis import given
from hypothesis import strategies as st

from core.signing import sign, verify


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    header = sign("s3cret", b'{"a":1}', 1_700_000_000)
    want = hmac.new(b"s3cret", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={want}"


@given(st.binary(max_size=2000), st.text(min_size=1, max_size=50))
def test_verify_accepts_its_own_and_rejects_tampering(body: bytes, secret: str) -> None:
    header = sign(secret, body, 1000)
    assert verify(secret, body, header, 1000)
    assert not verify(secret, body + b"x", header, 1000)
    assert not verify(secret + "x", body, header, 1000)
    assert not verify(secret, body, header, 1000 + 301)  # too old: a replay
    assert not verify(secret, body, header.replace("t=1000", "t=1001"), 1000)
    assert not verify(secret, body, "garbage", 1000)
