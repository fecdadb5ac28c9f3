"""Property: however the upstream chunks an answer, the person only ever sees a prefix of the
answer filtered at once, the stored answer is exactly that, and no embedded PII shows.

Hypothesis builds answers from words, numbers, capitals, <think> blocks, error markers and valid
emails, phone numbers, card numbers and IBANs, and cuts them at random places.
"""

import random

from django.test import override_settings
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from chat.filters import SafetyPipeline
from chat.pii import luhn_valid

FILTERS = ["think_blocks", "generation_error", "iban", "card", "email", "phone", "patterns"]
PATTERNS = [r"ACME-\d{4}", r"^secret$"]

PHONES = ["+1 415-555-2671", "(415) 555-2671", "+44 20 7946 0958", "+49 30 901820", "415.555.2671"]


def card(rng: random.Random) -> str:
    digits = [rng.randrange(10) for _ in range(15)]
    check = next(d for d in range(10) if luhn_valid("".join(map(str, digits + [d]))))
    number = "".join(map(str, digits + [check]))
    sep = rng.choice([" ", "-", ""])
    return sep.join(number[i : i + 4] for i in range(0, 16, 4))


def iban(rng: random.Random) -> str:
    bban = "".join(str(rng.randrange(10)) for _ in range(18))
    check = 98 - int(bban + "131400") % 97  # D=13, E=14, then "00"
    compact = f"DE{check:02d}{bban}"
    return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4)) if rng.random() < 0.5 else compact


def email(rng: random.Random) -> str:
    name = rng.choice(["alice", "bob.smith", "c_d+tag", "x-y"])
    return f"{name}{rng.randrange(100)}@{rng.choice(['example.com', 'mail.example.co.uk', 'acme.io'])}"


@st.composite
def answers(draw):
    """(text, the PII values in it that must never be shown)"""
    rng = random.Random(draw(st.integers(0, 2**32)))
    plain = st.sampled_from(
        ["Hello", " world", " the", "-", " ", "\n", "2024", " 12 34", "ABCD", " DE12", "a@b", "@", ".", "<thi", "<", "[GEN",
         "ACME-12", "secret", " 4111", " +1", "(415)", "IMPORTANT NOTE ", "x" * 250, "1 " * 40, "7 " * 52, "AB " * 30]
    )
    parts, secrets = [], []
    for kind in draw(st.lists(st.sampled_from(["plain"] * 4 + ["email", "phone", "card", "iban", "think", "marker", "pattern"]), max_size=25)):
        if kind == "plain":
            parts.append(draw(plain))
        elif kind == "think":
            parts.append(f"<think>{email(rng)} maybe</think>")
        elif kind == "marker":
            parts.append("[GENERATION_ERROR]")
        elif kind == "pattern":
            parts.append(f"; ACME-{rng.randrange(1000, 9999)}; ")
        else:
            value = {"email": email, "card": card, "iban": iban}.get(kind, lambda r: r.choice(PHONES))(rng)
            if draw(st.booleans()):
                parts.append(f"; {value}; ")
                secrets.append(value)
            else:  # glued to its neighbours: it may be found or not, the same streamed or at once
                parts.append(value)
    return "".join(parts), secrets


def filtered_at_once(text: str) -> str:
    pipeline = SafetyPipeline(FILTERS)
    return pipeline.feed(text) + pipeline.finish()


@override_settings(PORTAL_SAFETY_PATTERNS=PATTERNS)
@hypothesis_settings(max_examples=150, deadline=None)
@given(answers(), st.lists(st.integers(1, 40), min_size=1, max_size=60))
def test_what_is_shown_is_always_a_prefix_of_the_answer_filtered_at_once(answer, sizes):
    text, secrets = answer
    whole = filtered_at_once(text)
    pipeline = SafetyPipeline(FILTERS)
    shown, at, i = "", 0, 0
    while at < len(text):
        size = sizes[i % len(sizes)]
        shown += pipeline.feed(text[at : at + size])
        assert whole.startswith(shown)
        at, i = at + size, i + 1
    shown += pipeline.finish()
    assert shown == whole
    for value in secrets:
        assert value not in whole
    assert "<think>" not in whole and "[GENERATION_ERROR]" not in whole


@override_settings(PORTAL_SAFETY_PATTERNS=PATTERNS)
@hypothesis_settings(max_examples=100, deadline=None)
@given(st.text(alphabet="aZ09 -.@+()<>/[]_\n", max_size=400), st.integers(1, 20))
def test_any_text_streamed_equals_it_filtered_at_once(text, size):
    pipeline = SafetyPipeline(FILTERS)
    streamed = "".join(pipeline.feed(text[i : i + size]) for i in range(0, len(text), size)) + pipeline.finish()
    assert streamed == filtered_at_once(text)
