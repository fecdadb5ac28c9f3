"""The upstream client over HTTPS, as it talks to Genesys Cloud: TLS on our asyncio network layer,
certificate verification on, against the emulator serving a certificate made for the test."""

import shutil
import subprocess

import pytest
from django.test import override_settings

from chat.emulator.process import start_emulator
from chat.upstream import errors
from chat.upstream.genesys import GenesysClient, TextBatch
from tests.helpers import nonce

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate"),
]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


@pytest.fixture(scope="module")
def tls_emulator(certificate):
    cert, key = certificate
    with start_emulator(ttft_ms=0, tokens_per_second=0, reply_tokens=30, ssl_certfile=str(cert), ssl_keyfile=str(key)) as emu:
        yield emu


async def answer(prompt):
    text = []
    async for event in GenesysClient().stream_chat(
        messages=[{"role": "user", "content": prompt}], model_id="gpt-4", temperature=0.2, max_tokens=100, request_id="req-tls"
    ):
        if isinstance(event, TextBatch):
            text.append(event.text)
    return "".join(text)


async def test_a_completion_streams_over_verified_tls(tls_emulator, certificate):
    assert tls_emulator.url.startswith("https://")
    with override_settings(EMULATOR_URL=tls_emulator.url, UPSTREAM_TLS_VERIFY=str(certificate[0])):
        first = await answer(f"over TLS {nonce()}")
        second = await answer(f"again {nonce()}")
    assert len(first.split()) == 30 and len(second.split()) == 30


async def test_an_untrusted_certificate_is_refused(tls_emulator):
    with override_settings(EMULATOR_URL=tls_emulator.url, UPSTREAM_TLS_VERIFY=True, UPSTREAM_MAX_ATTEMPTS=1):
        with pytest.raises(errors.UpstreamUnavailable):
            await answer(f"should not connect {nonce()}")
