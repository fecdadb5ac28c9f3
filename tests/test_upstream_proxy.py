"""The upstream through a corporate proxy: tokens and completion streams go through a real proxy
(Debian's tinyproxy, with a password) on loopback, over plain HTTP and over TLS in a CONNECT tunnel
to the emulator; tinyproxy's own log shows each request went through it."""

import base64
import datetime
import ipaddress
import os
import re
import shutil

import pytest
from django.test import override_settings

from chat.emulator.process import start_emulator
from chat.upstream import errors
from chat.upstream.genesys import GenesysClient, TextBatch
from chat.upstream.streaming import Proxies
from gateway_portal.child_processes import CAPTURE, ChildProcess, LinePrinted, free_port
from tests.helpers import nonce

COMPLETIONS_PATH = "/api/v2/ai/generations/chat/completions"


@pytest.fixture(scope="module")
def tinyproxy(tmp_path_factory):
    if shutil.which("tinyproxy") is None:
        if os.environ.get("PORTAL_REQUIRE_PROXY"):
            pytest.fail("tinyproxy is needed for the proxy tests (apt-get install tinyproxy; .ci/run does)")
        pytest.skip("tinyproxy is not installed (apt-get install tinyproxy)")
    port = free_port()
    config = tmp_path_factory.mktemp("tinyproxy") / "tinyproxy.conf"
    # No ConnectPort line: CONNECT to any port (the emulator's is a random one).
    config.write_text(
        f"Port {port}\nListen 127.0.0.1\nTimeout 60\nLogLevel Info\nMaxClients 100\nAllow 127.0.0.1\n"
        "BasicAuth portal proxy-pass-1\n"
    )
    child = ChildProcess.start(["tinyproxy", "-d", "-c", str(config)], name="tinyproxy", output=CAPTURE, die_with_parent=True)
    try:
        child.wait_ready(LinePrinted("Accepting connections"), 10)
        yield child, f"http://portal:proxy-pass-1@127.0.0.1:{port}", port
    finally:
        child.stop(5)


def proxied(tinyproxy, since: int) -> str:
    """What tinyproxy logged since `since` characters into its output."""
    return tinyproxy[0].output()[since:]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1, made here (no openssl command needed)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("proxy-tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return str(cert_path), str(key_path)


async def answer(prompt, **extra):
    text = []
    async for event in GenesysClient().stream_chat(
        messages=[{"role": "user", "content": prompt}], model_id="gpt-4", temperature=0.2, max_tokens=100, request_id="req-proxy"
    ):
        if isinstance(event, TextBatch):
            text.append(event.text)
    return "".join(text)


@pytest.mark.django_db(transaction=True)
async def test_tokens_and_streams_to_an_http_upstream_go_through_the_proxy(tinyproxy, emulator):
    since = len(tinyproxy[0].output())
    with override_settings(HTTP_PROXY=tinyproxy[1], HTTPS_PROXY="", NO_PROXY="example.com"):
        first = await answer(f"through the proxy {nonce()}")
        second = await answer(f"again {nonce()}")
    assert len(first.split()) == 40 and len(second.split()) == 40
    log = proxied(tinyproxy, since)
    # Absolute-form requests, to the proxy, for the token and for each completion.
    assert len(re.findall(rf"POST {re.escape(emulator.url)}/oauth/token HTTP/1.1", log)) == 1, log
    assert len(re.findall(rf"POST {re.escape(emulator.url)}{COMPLETIONS_PATH} HTTP/1.1", log)) == 2, log


@pytest.mark.django_db(transaction=True)
async def test_tls_to_the_upstream_runs_through_a_connect_tunnel(tinyproxy, certificate):
    cert, key = certificate
    with start_emulator(ttft_ms=0, tokens_per_second=0, reply_tokens=30, ssl_certfile=cert, ssl_keyfile=key) as emu:
        since = len(tinyproxy[0].output())
        with override_settings(EMULATOR_URL=emu.url, UPSTREAM_TLS_VERIFY=cert, HTTPS_PROXY=tinyproxy[1], HTTP_PROXY=""):
            first = await answer(f"tunnelled {nonce()}")
            second = await answer(f"kept alive {nonce()}")
    assert emu.url.startswith("https://") and len(first.split()) == 30 and len(second.split()) == 30
    log = proxied(tinyproxy, since)
    # One tunnel for the token (httpx), one for the streams, reused by the second answer; the
    # proxy sees where to, never a path, a token or a word of the conversation.
    tunnels = re.findall(rf"CONNECT 127\.0\.0\.1:{emu.port} HTTP/1.1", log)
    assert len(tunnels) == 2, log
    assert "/oauth/token" not in log and COMPLETIONS_PATH not in log and "tunnelled" not in log


@pytest.mark.django_db(transaction=True)
async def test_a_wrong_proxy_password_fails_the_answer_with_a_sentence(tinyproxy, emulator, caplog):
    since = len(tinyproxy[0].output())
    wrong = tinyproxy[1].replace("proxy-pass-1", "guess")
    with override_settings(HTTP_PROXY=wrong, UPSTREAM_MAX_ATTEMPTS=1):
        with pytest.raises(errors.UpstreamError) as failure:
            await answer(f"refused {nonce()}")
    # tinyproxy 1.11 answers a bad password with 401 (not 407) and closes at once: the client sees
    # that 401 (the portal cannot sign in) or a reset (unavailable), depending on who is quicker.
    assert isinstance(failure.value, errors.UpstreamAuthFailed | errors.UpstreamUnavailable)
    assert f"POST {emulator.url}/oauth/token" in proxied(tinyproxy, since)
    assert "guess" not in failure.value.detail and "guess" not in caplog.text


@pytest.mark.django_db(transaction=True)
async def test_no_proxy_hosts_are_reached_directly(emulator):
    dead_proxy = f"http://127.0.0.1:{free_port()}"  # nothing listens: going through it would fail
    with override_settings(HTTP_PROXY=dead_proxy, HTTPS_PROXY=dead_proxy, NO_PROXY="localhost, 127.0.0.0/8"):
        text = await answer(f"direct {nonce()}")
    assert len(text.split()) == 40


@pytest.mark.parametrize("host, port, no_proxy, bypassed", [
    ("api.mypurecloud.com", 443, "mypurecloud.com", True),
    ("api.mypurecloud.com", 443, ".mypurecloud.com", True),
    ("api.mypurecloud.com", 443, "*.mypurecloud.com", True),
    ("notmypurecloud.com", 443, "mypurecloud.com", False),
    ("api.mypurecloud.com", 443, "mypurecloud.com:8443", False),
    ("api.mypurecloud.com", 8443, "mypurecloud.com:8443", True),
    ("10.2.3.4", 443, "10.0.0.0/8", True),
    ("11.2.3.4", 443, "10.0.0.0/8", False),
    ("::1", 443, "::1", True),
    ("::1", 8080, "[::1]:8080", True),
    ("anything.example", 443, "*", True),
    ("anything.example", 443, "", False),
])
def test_no_proxy_matches_names_subdomains_ports_and_ranges(host, port, no_proxy, bypassed):
    assert Proxies(https="http://proxy:3128", no_proxy=no_proxy).bypasses(host, port) is bypassed


def test_proxy_credentials_are_read_percent_decoded_and_never_shown():
    from chat.upstream.streaming import Proxy

    proxy = Proxy.from_url("http://corp%5Cjane:p%40ss%3Aword@proxy.corp.example:3128")
    assert proxy.authorization == "Basic " + base64.b64encode(b"corp\\jane:p@ss:word").decode()
    assert (proxy.host, proxy.port) == ("proxy.corp.example", 3128) and "p@ss" not in repr(proxy)


@pytest.mark.django_db(transaction=True)
async def test_a_chat_in_a_running_portal_reaches_a_tls_upstream_through_the_proxy_from_the_environment(
    tinyproxy, certificate, alice
):
    import asyncio
    import json

    import websockets
    from asgiref.sync import sync_to_async

    from tests.helpers import launch_portal, session_cookie_for

    cert, key = certificate
    with start_emulator(ttft_ms=0, tokens_per_second=0, reply_tokens=25, ssl_certfile=cert, ssl_keyfile=key) as emu:
        since = len(tinyproxy[0].output())
        # As an operator sets them: lower-case https_proxy too, as curl reads it.
        portal = await sync_to_async(launch_portal)(
            "--job-workers", "0", "--no-admin", "--emulator-url", emu.url,
            https_proxy=tinyproxy[1], UPSTREAM_TLS_VERIFY=cert, NO_PROXY="example.com",
        )
        try:
            cookie = await sync_to_async(session_cookie_for)(alice)
            async with websockets.connect(
                portal.url.replace("http", "ws") + "/ws/chat/",
                additional_headers={"Cookie": f"sessionid={cookie}", "Origin": portal.url},
            ) as ws:
                await ws.send(json.dumps({"type": "send", "conversation": None, "content": f"Via the proxy {nonce()}"}))
                frames = []
                async with asyncio.timeout(30):
                    while not frames or frames[-1]["type"] not in ("done", "error"):
                        frames.append(json.loads(await ws.recv()))
        finally:
            await sync_to_async(portal.stop)()
    assert frames[-1]["type"] == "done", frames[-1]
    text = "".join(frame["text"] for frame in frames if frame["type"] == "delta")
    assert len(text.split()) == 25
    assert len(re.findall(rf"CONNECT 127\.0\.0\.1:{emu.port} HTTP/1.1", proxied(tinyproxy, since))) == 2
