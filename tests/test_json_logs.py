"""PORTAL_LOG_FORMAT=json: a running portal writes one JSON object a line, and a line about a
completion carries that completion's request id. (And the checks of the monitoring and proxy
settings, which stop a portal started with a wrong one.)"""

import asyncio
import json
import os
import subprocess
import sys

import pytest
import websockets
from asgiref.sync import sync_to_async

from tests.helpers import PROJECT, _test_database_url, launch_portal, nonce, session_cookie_for

pytestmark = pytest.mark.django_db(transaction=True)


async def test_log_lines_are_json_with_the_request_id_of_their_completion(alice):
    portal = await sync_to_async(launch_portal)("--job-workers", "0", "--no-admin", PORTAL_LOG_FORMAT="json")
    try:
        cookie = await sync_to_async(session_cookie_for)(alice)
        async with websockets.connect(
            portal.url.replace("http", "ws") + "/ws/chat/",
            additional_headers={"Cookie": f"sessionid={cookie}", "Origin": portal.url},
        ) as ws:
            # One failed attempt, retried: the retry is logged as a warning during the completion.
            await ws.send(json.dumps({"type": "send", "conversation": None,
                                      "content": f"[[emulator fault=503 times=1]] log me {nonce()}"}))
            frames = []
            async with asyncio.timeout(30):
                while not frames or frames[-1]["type"] not in ("done", "error"):
                    frames.append(json.loads(await ws.recv()))
    finally:
        output = await sync_to_async(portal.stop)()
    request_id = frames[0]["request_id"]
    assert frames[-1]["type"] == "done"

    log_lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert log_lines, output
    assert all({"time", "level", "logger", "message", "request_id"} <= set(line) for line in log_lines)
    retry = [line for line in log_lines if "retrying" in line["message"]]
    assert len(retry) == 1 and retry[0]["level"] == "WARNING" and retry[0]["logger"] == "chat.upstream.genesys"
    assert retry[0]["request_id"] == request_id
    # Lines outside any completion say so with an empty id.
    assert all(line["request_id"] in ("", request_id) for line in log_lines)
    # What runportal prints for people stays plain text; every log line is JSON.
    assert not [line for line in output.splitlines() if " WARNING " in line or " ERROR " in line]


def check(**env) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": _test_database_url(), **env}
    return subprocess.run([sys.executable, "manage.py", "check"], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=60)


def test_an_unknown_log_format_stops_the_portal_with_a_sentence():
    result = check(PORTAL_LOG_FORMAT="xml")
    assert result.returncode != 0 and "PORTAL_LOG_FORMAT=xml is not allowed: plain or json" in result.stderr


def test_a_proxy_url_that_is_not_http_stops_the_portal_without_showing_its_password():
    result = check(HTTPS_PROXY="socks5://jane:hunter2@proxy.corp.example:1080")
    assert result.returncode != 0 and "HTTPS_PROXY=… is not allowed: an http:// proxy URL" in result.stderr
    assert "hunter2" not in result.stdout + result.stderr
