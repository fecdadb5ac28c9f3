"""`manage.py chat`: one completion from the shell, through the executor, as a person runs it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from audit.models import AuditEntry, UsageRecord
from tests.helpers import PROJECT, _test_database_url, nonce

pytestmark = pytest.mark.django_db(transaction=True)


def chat(emulator, *args, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": _test_database_url(), "EMULATOR_URL": emulator.url, "UPSTREAM_BACKOFF_BASE": "0.02", "UPSTREAM_DEADLINE": "3"}
    env.pop("GENESYS_CLIENT_ID", None)
    return subprocess.run(
        [sys.executable, "manage.py", "chat", *args], cwd=PROJECT, env=env, input=stdin, capture_output=True, text=True, timeout=60,
    )


def test_the_answer_streams_to_stdout_and_is_audited_as_the_command(emulator, alice):
    done = chat(emulator, f"What is a gateway? {nonce()}", "--user", "alice", "--model", "gpt-4o", "--max-tokens", "30", "--temperature", "0.1")

    assert done.returncode == 0, done.stderr
    assert "gateway" in done.stdout.lower() and done.stdout.endswith("\n") and done.stderr == ""
    entry = AuditEntry.objects.get(action="completion.succeeded")
    assert (entry.user, entry.team.slug, entry.model_id, entry.details) == (alice, "red", "gpt-4o", {"client": "command"})
    assert UsageRecord.objects.get(request_id=entry.request_id).output_tokens == 30


def test_the_prompt_can_come_from_stdin(emulator, alice):
    done = chat(emulator, "--user", "alice", "--max-tokens", "10", stdin=f"Piped question {nonce()}\n")
    assert done.returncode == 0 and "Piped question" in done.stdout


def test_a_refused_request_exits_non_zero_with_the_sentence_on_stderr(emulator, alice):
    done = chat(emulator, "Hello", "--user", "alice", "--temperature", "5")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip() == "Temperature must be a number from 0.0 to 1.0."


def test_an_upstream_failure_exits_non_zero_with_the_sentence(emulator, alice):
    done = chat(emulator, f"[[emulator fault=503 times=50]] {nonce()}", "--user", "alice")
    assert done.returncode == 1 and "unavailable" in done.stderr


def test_someone_unknown_cannot_ask(emulator, alice):
    done = chat(emulator, "Hello", "--user", "mallory")
    assert done.returncode == 1 and "no active user named “mallory”" in done.stderr
