"""The bundled Genesys AI Gateway emulator, over a real loopback socket.

The portal's upstream client, its tests and the benchmark all rely on this protocol surface,
so these tests pin it: auth, validation errors, streaming shape, determinism and every fault.
"""

import json
import time

import httpx
import pytest

from chat.emulator import start_emulator

COMPLETIONS = "/api/v2/ai/generations/chat/completions"


@pytest.fixture(scope="module")
def emulator():
    """Overrides the suite's shared emulator: these tests want the default 120-token replies."""
    with start_emulator(ttft_ms=0, tokens_per_second=0) as emu:
        yield emu


@pytest.fixture
def client(emulator):
    with httpx.Client(base_url=emulator.url, timeout=5) as c:
        yield c


def get_token(client):
    r = client.post("/oauth/token", auth=("emulator", "emulator-secret"),
                    data={"grant_type": "client_credentials", "scope": "ai:generation:write"})
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


@pytest.fixture
def auth(client):
    return {"Authorization": f"Bearer {get_token(client)}"}


def body(content, stream=True, **params):
    return {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": content}],
            "params": {"model_id": "gpt-4", "temperature": 0.7, "max_tokens": 512, "stream": stream, **params}}


def read_events(response):
    """The payloads of the `data:` lines of an SSE response, in order."""
    return [line[6:] for line in response.iter_lines() if line.startswith("data: ")]


def stream(client, auth, payload, headers=None):
    with client.stream("POST", COMPLETIONS, json=payload, headers={**auth, **(headers or {})}) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        return read_events(r)


def content_of(raw_events):
    return "".join(json.loads(e)["choices"][0]["delta"].get("content", "")
                   for e in raw_events if e not in ("[DONE]",) and not e.startswith("{this"))


# -- token endpoint ---------------------------------------------------------------------------

def test_token_with_good_credentials(client):
    r = client.post("/oauth/token", auth=("emulator", "emulator-secret"),
                    data={"grant_type": "client_credentials", "scope": "ai:generation:write"})
    assert r.status_code == 200
    data = r.json()
    assert data["access_token"].startswith("emu-")
    assert data["token_type"] == "bearer"
    assert data["expires_in"] == 86399


@pytest.mark.parametrize("creds", [("emulator", "wrong"), ("someone", "emulator-secret"), None])
def test_token_with_bad_credentials_is_401(client, creds):
    r = client.post("/oauth/token", auth=creds, data={"grant_type": "client_credentials"})
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_client"


def test_token_with_other_grant_is_400(client):
    r = client.post("/oauth/token", auth=("emulator", "emulator-secret"), data={"grant_type": "password"})
    assert r.status_code == 400
    assert r.json()["error"] == "unsupported_grant_type"


# -- auth and validation ----------------------------------------------------------------------

@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer emu-not-issued"}])
def test_completion_without_valid_token_is_401(client, headers):
    r = client.post(COMPLETIONS, json=body("hi"), headers=headers)
    assert r.status_code == 401
    assert r.json()["code"] == "authentication.required"
    assert r.json()["status"] == 401


@pytest.mark.parametrize("payload, field", [
    ({"messages": [{"role": "robot", "content": "hi"}], "params": {"model_id": "gpt-4"}}, "role"),
    (body("hi", temperature=1.5), "temperature"),
    (body("hi", model_id="gpt-99"), "model_id"),
    (body("hi", max_tokens=0), "max_tokens"),
    ({"messages": [], "params": {"model_id": "gpt-4"}}, "messages"),
    ({"messages": [{"role": "user", "content": 5}]}, "content"),
])
def test_invalid_requests_are_400_naming_the_field(client, auth, payload, field):
    r = client.post(COMPLETIONS, json=payload, headers=auth)
    assert r.status_code == 400
    data = r.json()
    assert data["code"] == "bad.request" and data["status"] == 400
    assert field in data["message"]


def test_invalid_json_is_400(client, auth):
    r = client.post(COMPLETIONS, content=b"{nope", headers={**auth, "content-type": "application/json"})
    assert r.status_code == 400
    assert "JSON" in r.json()["message"]


def test_unknown_directive_is_400(client, auth):
    r = client.post(COMPLETIONS, json=body("hi [[emulator explode]]"), headers=auth)
    assert r.status_code == 400
    assert "explode" in r.json()["message"]


# -- streaming and determinism ----------------------------------------------------------------

def test_stream_matches_non_stream_and_ends_with_usage(client, auth):
    payload = body("Explain token caching in the gateway")
    events = stream(client, auth, payload)
    first = json.loads(events[0])
    assert first["id"].startswith("gen-")
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert events[-1] == "[DONE]"
    final = json.loads(events[-2])
    assert final["choices"][0]["finish_reason"] == "stop"
    assert final["choices"][0]["delta"] == {}
    content_events = events[1:-2]
    assert len(content_events) == 120  # reply_tokens, one word per chunk
    usage = final["usage"]
    chars = len("Be brief.") + len("Explain token caching in the gateway")
    assert usage == {"prompt_tokens": -(-chars // 4), "completion_tokens": 120, "total_tokens": -(-chars // 4) + 120}

    r = client.post(COMPLETIONS, json=body("Explain token caching in the gateway", stream=False), headers=auth)
    assert r.status_code == 200
    data = r.json()
    assert data["choices"][0]["message"] == {"role": "assistant", "content": content_of(events)}
    assert data["choices"][0]["finish_reason"] == "stop"
    assert data["usage"] == usage
    assert "token caching" in data["choices"][0]["message"]["content"]  # the echo


def test_different_prompts_give_different_text(client, auth):
    a = client.post(COMPLETIONS, json=body("first question", stream=False), headers=auth).json()
    b = client.post(COMPLETIONS, json=body("second question", stream=False), headers=auth).json()
    assert a["choices"][0]["message"]["content"] != b["choices"][0]["message"]["content"]


def test_max_tokens_cuts_with_finish_reason_length(client, auth):
    events = stream(client, auth, body("a long answer please", max_tokens=7))
    final = json.loads(events[-2])
    assert final["choices"][0]["finish_reason"] == "length"
    assert final["usage"]["completion_tokens"] == 7
    assert len(events) == 1 + 7 + 2


def test_chunk_tokens_and_tokens_directives(client, auth):
    events = stream(client, auth, body("short [[emulator tokens=10 chunk_tokens=4]]"))
    assert len(events) == 1 + 3 + 2  # 4 + 4 + 2 words
    assert json.loads(events[-2])["usage"]["completion_tokens"] == 10
    assert "emulator" not in content_of(events)  # the directive is not echoed


def test_rate_directive_paces_the_stream(client, auth):
    started = time.monotonic()
    stream(client, auth, body("paced [[emulator tokens=10 rate=100]]"))
    assert time.monotonic() - started >= 0.08  # 10 tokens at 100/s, first one at once


# -- faults -----------------------------------------------------------------------------------

def test_429_with_retry_after_only_the_first_time(client, auth):
    payload = body("rate limit me [[emulator fault=429 retry_after=2 times=1]]")
    r = client.post(COMPLETIONS, json=payload, headers=auth)
    assert r.status_code == 429
    assert r.headers["retry-after"] == "2"
    assert r.json()["status"] == 429
    assert stream(client, auth, payload)[-1] == "[DONE]"


def test_429_without_retry_after_has_no_header(client, auth):
    r = client.post(COMPLETIONS, json=body("no header [[emulator fault=429]]"), headers=auth)
    assert r.status_code == 429
    assert "retry-after" not in r.headers


def test_503_always(client, auth):
    payload = body("down [[emulator fault=503]]")
    for _ in range(3):
        r = client.post(COMPLETIONS, json=payload, headers=auth)
        assert r.status_code == 503
        assert r.json()["status"] == 503


def test_403_names_the_scope(client, auth):
    r = client.post(COMPLETIONS, json=body("forbidden"), headers={**auth, "X-Emulator": "fault=403"})
    assert r.status_code == 403
    assert "ai:generation:write" in r.json()["message"]


def test_expire_token_then_works_with_a_new_token(client, auth):
    payload = body("expire me [[emulator expire_token]]")
    r = client.post(COMPLETIONS, json=payload, headers=auth)
    assert r.status_code == 401
    assert r.json()["code"] == "authentication.required"
    assert client.post(COMPLETIONS, json=body("other"), headers=auth).status_code == 401  # revoked
    fresh = {"Authorization": f"Bearer {get_token(client)}"}
    assert stream(client, fresh, payload)[-1] == "[DONE]"


def test_drop_after_gives_an_incomplete_stream(client, auth, emulator):
    received = []
    with pytest.raises(httpx.RemoteProtocolError):
        with client.stream("POST", COMPLETIONS, json=body("drop [[emulator drop_after=3]]"), headers=auth) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("data: "):
                    received.append(line[6:])
    assert len(received) == 1 + 3  # role event and three content chunks, no final, no [DONE]
    assert "[DONE]" not in received
    assert "Traceback" not in emulator.output()  # an intended drop is not logged as a crash


def test_drop_after_cuts_a_non_streamed_body(client, auth):
    with pytest.raises(httpx.RemoteProtocolError):
        client.post(COMPLETIONS, json=body("drop whole [[emulator drop_after=0]]", stream=False), headers=auth)


def test_client_walking_away_ends_the_stream(client, auth):
    payload = body("walk away [[emulator rate=100 tokens=500]]")
    with client.stream("POST", COMPLETIONS, json=payload, headers=auth) as r:
        for i, _ in enumerate(r.iter_lines()):
            if i > 4:
                break
    deadline = time.monotonic() + 2
    while client.get("/_emulator/stats").json()["active_streams"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert client.get("/_emulator/stats").json()["active_streams"] == 0


def test_malformed_line_then_continues(client, auth):
    events = stream(client, auth, body("bad line [[emulator malformed]]"))
    assert events[3] == "{this is not json"  # after the role event and 2 content chunks
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["usage"]["completion_tokens"] == 120


def test_think_and_generation_error_in_text(client, auth):
    events = stream(client, auth, body("reason [[emulator think gen_error]]"))
    contents = [json.loads(e)["choices"][0]["delta"].get("content") for e in events[1:-2]]
    assert contents[0] == "<think>"
    assert " </think>" in contents
    assert " [GENERATION_ERROR]" in contents
    text = "".join(contents)
    assert text.index("</think>") < text.index("[GENERATION_ERROR]")


def test_stall_first_delays_headers(client, auth):
    with pytest.raises(httpx.ReadTimeout):
        client.post(COMPLETIONS, json=body("slow [[emulator stall_first=0.5]]"), headers=auth, timeout=0.15)


def test_stall_mid_pauses_after_chunks(client, auth):
    started = time.monotonic()
    events = stream(client, auth, body("pause [[emulator stall_mid=0.2 after=2 tokens=5]]"))
    assert time.monotonic() - started >= 0.2
    assert events[-1] == "[DONE]"


# -- OpenAI shape and stats -------------------------------------------------------------------

def test_openai_shape_stream(client):
    payload = {"model": "openai/gpt-4o", "stream": True, "max_tokens": 5,
               "messages": [{"role": "user", "content": "hello from litellm"}]}
    with client.stream("POST", "/v1/chat/completions", json=payload, headers={"Authorization": "Bearer sk-any"}) as r:
        assert r.status_code == 200
        events = read_events(r)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "openai/gpt-4o" for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["usage"]["completion_tokens"] == 5

    payload["stream"] = False
    r = client.post("/v1/chat/completions", json=payload, headers={"Authorization": "Bearer sk-any"})
    data = r.json()
    assert data["object"] == "chat.completion"
    assert data["choices"][0]["message"]["content"] == content_of(events[:-1])


def test_openai_shape_needs_a_bearer(client):
    r = client.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 401
    assert "error" in r.json()


def test_stats_count_requests(client, auth):
    client.post("/_emulator/reset")
    get_token(client)
    client.post(COMPLETIONS, json=body("count me", stream=False), headers=auth)
    client.post(COMPLETIONS, json=body("count me too"), headers=auth)
    stats = client.get("/_emulator/stats").json()
    assert stats["token_requests"] == 1
    assert stats["completion_requests"] == 2
    assert stats["active_streams"] == 0


def test_tokens_expire_and_stop_is_clean(emulator):
    assert httpx.get(emulator.url + "/health").text == "ok"
    with start_emulator(ttft_ms=0, tokens_per_second=0, token_ttl=1, client_id="portal", client_secret="s3cret") as other:
        with httpx.Client(base_url=other.url) as c:
            r = c.post("/oauth/token", auth=("portal", "s3cret"), data={"grant_type": "client_credentials"})
            assert r.json()["expires_in"] == 1
            headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
            assert c.post(COMPLETIONS, json=body("x", stream=False), headers=headers).status_code == 200
            time.sleep(1.05)
            assert c.post(COMPLETIONS, json=body("x", stream=False), headers=headers).status_code == 401
    assert other.child.returncode == 0  # clean exit on SIGTERM
    other.stop()  # idempotent


def test_an_emulator_that_cannot_start_says_why(tmp_path):
    missing = str(tmp_path / "missing.pem")
    with pytest.raises(RuntimeError) as failure:
        start_emulator(ssl_certfile=missing, ssl_keyfile=missing)
    assert "The emulator" in str(failure.value) and "exited with status 1 before it was ready" in str(failure.value)
    assert "FileNotFoundError" in str(failure.value)  # the end of its output: the reason
