"""Deterministic reply text for the emulator.

The same messages always give the same reply, so a test can compare a streamed answer with a
non-streamed one, and a benchmark run is repeatable. The text looks like a plausible markdown
answer (an echo of the question, paragraphs, sometimes a heading, a bullet list or a fenced
code block, some **bold**) so the portal's rendering and filters see realistic input.

A "token" is a word with its leading whitespace attached: joining the tokens gives the text
exactly, and each token is self-contained markdown (bold and inline code never span tokens),
so cutting the reply at any token never leaves a dangling ``**``.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from functools import lru_cache

TOKEN_RE = re.compile(r"\s*\S+")

GENERATION_ERROR = " [GENERATION_ERROR]"
_JUNK = (" \u00bf\u00bf\u00bf", " ####", " <|im_end|>", " ERR_0x1F", " \ufffd\ufffd")

_WORDS = (
    "gateway request token stream model latency response client server cache policy quota "
    "audit team message value result service retry backoff header payload schema field limit "
    "window budget metric event buffer queue worker process deadline timeout connection "
    "session record entry setting default option error status signal filter rule check path "
    "route handler function module layer boundary contract interface deployment region "
    "credential scope lifetime refresh throughput usage report dashboard analytics webhook "
    "delivery outbox transaction database index migration replica backup retention compliance "
    "review approval owner operator administrator user history context prompt completion "
    "temperature sampling chunk delta sequence checkpoint subscriber channel group"
).split()
_VERBS = ("keeps checks sends stores limits reports retries refreshes validates records streams "
          "caches routes filters measures protects bounds tracks").split()
_ADJECTIVES = "shared stale short bounded separate durable single fresh slow fast current idle".split()
_PREPOSITIONS = "for with in across behind before after per through under".split()
_DETERMINERS = "the each a every one your".split()
_OPENINGS = (
    "You asked about {echo}.",
    "Here is an overview of {echo}.",
    "Good question about {echo}.",
    "Let's look at {echo} step by step.",
)
# Endings for the last few tokens of a reply, so it does not end on a sentence stub like "The.".
_CLOSINGS = {1: "Done.", 2: "That's all.", 3: "Hope this helps.", 4: "I hope this helps."}
_HEADINGS = ("Overview", "How it works", "Details", "Example", "Trade-offs", "Next steps", "Summary")
_CODE_TEMPLATES = (
    'def {fn}({a}, {b}=None):\n    """{doc}"""\n    {v} = {{}}\n    for item in {a}:\n'
    "        {v}[item] = {b} or len(item)\n    return {v}",
    'async def {fn}(client, {a}):\n    response = await client.post("/{w1}/{w2}", json={{"{w3}": {a}}})\n'
    "    response.raise_for_status()\n    return response.json()",
    "class {cls}:\n    def __init__(self, {a}):\n        self.{a} = {a}\n\n    def {fn}(self):\n"
    "        return self.{a} * 2",
)
_ECHO_STRIP = re.compile(r"[*_`#<>\[\]|\"]")


def tokenize(text: str) -> list[str]:
    """Split text into tokens (words with their leading whitespace)."""
    return TOKEN_RE.findall(text)


@lru_cache(maxsize=1024)
def reply_tokens(
    messages: tuple[tuple[str, str], ...], length: int, think: bool = False, gen_error: bool = False
) -> tuple[str, ...]:
    """The reply to ``messages`` as tokens.

    ``length`` is the number of answer tokens. ``think`` prepends a ``<think>...</think>``
    block (extra tokens); ``gen_error`` replaces the last part of the answer with a
    ``[GENERATION_ERROR]`` marker followed by junk, like a model that broke down mid-reply.
    Cached because benchmarks send the same prompt over and over.
    """
    seed_src = json.dumps(messages, separators=(",", ":"), ensure_ascii=False).encode()
    rng = random.Random(int.from_bytes(hashlib.sha256(seed_src).digest()[:8], "big"))
    echo = _echo(messages)
    tokens: list[str] = []
    if think:
        tokens += _think_tokens(rng, echo)
    answer = _answer_tokens(rng, echo, max(1, length))
    if think:
        answer[0] = "\n\n" + answer[0]
    if gen_error:
        keep = max(1, int(len(answer) * 0.85))
        answer = answer[:keep] + [GENERATION_ERROR] + list(_JUNK[: rng.randint(3, len(_JUNK))])
    tokens += answer
    return tuple(tokens)


def _echo(messages: tuple[tuple[str, str], ...]) -> str:
    """A few words of the last user message, cleaned of markdown so the echo renders plainly."""
    for role, content in reversed(messages):
        if role == "user":
            words = _ECHO_STRIP.sub("", content).split()[:6]
            if words:
                return "\u201c" + " ".join(words) + "\u201d"
            break
    return "your question"


def _think_tokens(rng: random.Random, echo: str) -> list[str]:
    words = f"The user asks about {echo}. I should explain the {rng.choice(_WORDS)} and the {rng.choice(_WORDS)} clearly, with an example."
    return ["<think>"] + [" " + w for w in words.split()] + [" </think>"]


def _noun_phrase(rng: random.Random) -> list[str]:
    noun = rng.choice(_WORDS)
    roll = rng.random()
    if roll < 0.1:
        noun = f"**{noun}**"
    elif roll < 0.16:
        noun = f"`{noun}`"
    words = [rng.choice(_ADJECTIVES), noun] if rng.random() < 0.3 else [noun]
    det = rng.choice(_DETERMINERS)
    if det == "a" and words[0].strip("*`")[0] in "aeio":
        det = "an"
    return [det, *words]


def _sentence(rng: random.Random, phrases: int | None = None) -> str:
    """Subject, verb, object and a few prepositional phrases: reads like prose, not a word list."""
    words = _noun_phrase(rng) + [rng.choice(_VERBS)] + _noun_phrase(rng)
    for _ in range(rng.randint(0, 2) if phrases is None else phrases):
        words += [rng.choice(_PREPOSITIONS)] + _noun_phrase(rng)
    words[0] = words[0].capitalize()
    return " ".join(words) + "."


def _code(rng: random.Random) -> str:
    w = [rng.choice(_WORDS) for _ in range(6)]
    body = rng.choice(_CODE_TEMPLATES).format(
        fn=f"{w[0]}_{w[1]}", a=w[2] + "s", b=w[3], v=w[4] + "_map", w1=w[0], w2=w[5],
        w3=w[1], cls=w[4].capitalize() + w[5].capitalize(), doc=_sentence(rng, 0),
    )
    return f"```python\n{body}\n```"


# Pools built once from a fixed seed: a reply picks from them, so making one costs a few dozen
# RNG calls instead of hundreds (the benchmark makes hundreds of replies a second).
_POOL_RNG = random.Random(1729)
_SENTENCES = tuple(_sentence(_POOL_RNG) for _ in range(1024))
_SHORT_SENTENCES = tuple(_sentence(_POOL_RNG, _POOL_RNG.randint(0, 1)) for _ in range(256))
_CODE_BLOCKS = tuple(_code(_POOL_RNG) for _ in range(48))
del _POOL_RNG


def _paragraph(rng: random.Random) -> str:
    return " ".join(rng.choice(_SENTENCES) for _ in range(rng.randint(2, 4)))


def _bullets(rng: random.Random) -> str:
    return "\n".join("- " + rng.choice(_SHORT_SENTENCES) for _ in range(rng.randint(3, 5)))


def _answer_tokens(rng: random.Random, echo: str, length: int) -> list[str]:
    """Blocks until ``length`` tokens; lists and code only where they fit whole, so the last
    (truncated) block is always a paragraph and markdown stays balanced."""
    opening = rng.choice(_OPENINGS).format(echo=echo) + " " + rng.choice(_SENTENCES)
    tokens = tokenize(opening)
    while len(tokens) < length:
        roll = rng.random()
        if length - len(tokens) in _CLOSINGS:
            block = _CLOSINGS[length - len(tokens)]
        elif roll < 0.2:
            block = _bullets(rng)
        elif roll < 0.35:
            block = rng.choice(_CODE_BLOCKS)
        elif roll < 0.45:
            block = f"### {rng.choice(_HEADINGS)}\n\n{_paragraph(rng)}"
        else:
            block = _paragraph(rng)
        block_tokens = tokenize("\n\n" + block)
        room = length - len(tokens)
        if len(block_tokens) > room and not block.startswith(("#", "- ", "```")):
            tokens += block_tokens[:room]
        elif len(block_tokens) <= room:
            tokens += block_tokens
        # else: a list/code block that does not fit whole; try another block.
    tokens = tokens[:length]
    if not tokens[-1].endswith((".", ":", "```", "?", "!")):
        tokens[-1] = tokens[-1].rstrip(",;") + "."
    return tokens
