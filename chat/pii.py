"""PII redaction: safety filters that replace personal data in an answer while it streams.

    email      addresses                                     -> [email removed]
    phone      numbers the `phonenumbers` library finds valid -> [phone removed]
    card       payment card numbers passing Luhn             -> [card removed]
    iban       IBANs passing their mod-97 checksum           -> [IBAN removed]
    patterns   PORTAL_SAFETY_PATTERNS, inside one word       -> [text removed]

How a filter stays smooth and never flashes: every match is made of a few kinds of characters
(an address of letters, digits and `._%+-@`; a card number of digits, spaces and dashes), so a
match always lies inside one *run* of them. Only the run at the end of the text so far can still
grow, so that is all a filter holds back; every run before it is complete and is redacted and
released at once. Each run is judged on its own, which is what makes the result independent of
how the text was chunked: streaming gives exactly the whole text redacted at once.

A run longer than any match (`longest`) is cut into pieces (at its last space within reach, else
hard), judged one by one, so a long run of digits or capitals is never held for ever; a match
straddling such a cut is the one thing not found.
"""

from __future__ import annotations

import re

import phonenumbers
from django.conf import settings


class Redaction:
    """One PII filter: feed() and finish() as chat/filters.py expects, count for the meta line."""

    name = ""
    replacement = ""
    noun = ("item", "items")
    chars = ""  # the characters a match is made of (a regex character class's inside)
    longest = 128  # no match is longer; a longer run is cut into pieces
    hint = re.compile("")  # found wherever a match could be: text without it is let through as is

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._run = re.compile(f"[{cls.chars}]+")
        cls._trailing = re.compile(f"[{cls.chars}]*")  # matched on the reversed text

    def __init__(self):
        self.count = 0
        self._held = ""

    def feed(self, text: str) -> str:
        text = self._held + text
        keep = self._trailing.match(text[::-1]).end()
        if keep == len(text) <= self.longest:  # still one run that may grow: nothing to release
            self._held = text
            return ""
        done, held = text[: len(text) - keep], text[len(text) - keep :]
        out = [self.redact(done)]
        while len(held) > self.longest:
            cut = self._cut(held)
            out.append(self.redact_piece(held[:cut]))
            held = held[cut:]
        self._held = held
        return "".join(out)

    def finish(self) -> str:
        held, self._held = self._held, ""
        return self.redact(held)

    def label(self) -> str:
        return f"{self.count} {self.noun[self.count != 1]} removed"

    def redact(self, text: str) -> str:
        """The text with every match replaced, judged run by run (also the whole-text filter)."""
        if not text or not self.hint.search(text):
            return text
        return self._run.sub(self._redact_run, text)

    def _redact_run(self, run: re.Match) -> str:
        text, pieces = run.group(), []
        while len(text) > self.longest:
            cut = self._cut(text)
            pieces.append(self.redact_piece(text[:cut]))
            text = text[cut:]
        pieces.append(self.redact_piece(text))
        return "".join(pieces)

    def _cut(self, run: str) -> int:
        space = run.rfind(" ", 1, self.longest + 1)
        return space if space > 0 else self.longest

    def redact_piece(self, piece: str) -> str:
        raise NotImplementedError


class Email(Redaction):
    name, replacement, noun = "email", "[email removed]", ("email", "emails")
    chars = r"A-Za-z0-9._%+@\-"
    longest = 254  # the longest address SMTP allows
    hint = re.compile("@")
    address = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")

    def redact_piece(self, piece: str) -> str:
        text, n = self.address.subn(self.replacement, piece)
        self.count += n
        return text


class Phone(Redaction):
    name, replacement, noun = "phone", "[phone removed]", ("phone number", "phone numbers")
    chars = r"0-9+()./ \-"
    longest = 64
    # Seven digits in one run: fewer is no phone number worth the library's time.
    hint = re.compile(r"\d(?:[+()./ \-]*\d){6}")

    def redact_piece(self, piece: str) -> str:
        if not self.hint.search(piece):
            return piece
        found = list(phonenumbers.PhoneNumberMatcher(piece, settings.PORTAL_SAFETY_PHONE_REGION, leniency=phonenumbers.Leniency.VALID))
        for match in reversed(found):
            piece = piece[: match.start] + self.replacement + piece[match.end :]
        self.count += len(found)
        return piece


class Card(Redaction):
    name, replacement, noun = "card", "[card removed]", ("card number", "card numbers")
    chars = r"0-9 \-"
    hint = re.compile(r"\d(?:[ \-]?\d){12}")
    groups = re.compile(r"\d+(?:[ \-]\d+)*")  # digits with single spaces or dashes between

    def redact_piece(self, piece: str) -> str:
        return self.groups.sub(self._redact_groups, piece)

    def _redact_groups(self, found: re.Match) -> str:
        # Every group in some run of whole groups with 13-19 digits that passes Luhn is removed,
        # neighbours that happen to pass with part of it included: a number written next to a
        # card may go with it, but no part of the card is ever shown.
        text = found.group()
        spans = [m.span() for m in re.finditer(r"\d+", text)]
        covered = [False] * len(spans)
        for i in range(len(spans)):
            digits = ""
            for j in range(i, len(spans)):
                digits += text[spans[j][0] : spans[j][1]]
                if len(digits) > 19:
                    break
                if len(digits) >= 13 and luhn_valid(digits):
                    covered[i : j + 1] = [True] * (j + 1 - i)
        if not any(covered):
            return text
        out, at, i = [], 0, 0
        while i < len(spans):
            if not covered[i]:
                i += 1
                continue
            j = i
            while j + 1 < len(spans) and covered[j + 1]:
                j += 1
            out += [text[at : spans[i][0]], self.replacement]
            at, i = spans[j][1], j + 1
            self.count += 1
        return "".join(out) + text[at:]


class Iban(Redaction):
    name, replacement, noun = "iban", "[IBAN removed]", ("IBAN", "IBANs")
    chars = r"A-Z0-9 "  # printed in capitals, in groups of four or in one piece
    hint = re.compile(r"[A-Z]{2}\d{2}")
    start = re.compile(r"[A-Z]{2}\d{2}[A-Z0-9]*")

    def redact_piece(self, piece: str) -> str:
        words, out, i = piece.split(" "), [], 0
        while i < len(words):
            end = self._iban_at(words, i)
            if end:
                out.append(self.replacement)
                self.count += 1
                i = end
            else:
                out.append(words[i])
                i += 1
        return " ".join(out)

    def _iban_at(self, words: list[str], i: int) -> int:
        """The end of the longest IBAN beginning at words[i] (groups of words), or 0."""
        if not self.start.fullmatch(words[i]):
            return 0
        for j in range(min(len(words), i + 9), i, -1):
            if all(words[i:j]) and iban_valid("".join(words[i:j])):
                return j
        return 0


class Patterns(Redaction):
    name, replacement, noun = "patterns", "[text removed]", ("blocked pattern", "blocked patterns")
    chars = r"^\s"  # a word: the patterns are matched inside text between whitespace
    longest = 256

    def __init__(self):
        super().__init__()
        self.hint = re.compile("|".join(f"(?:{p})" for p in settings.PORTAL_SAFETY_PATTERNS) or r"(?!)")

    def redact(self, text: str) -> str:
        # No hint: a pattern may be anchored (^…$) and so match a word but not the whole text.
        return self._run.sub(self._redact_run, text) if text and settings.PORTAL_SAFETY_PATTERNS else text

    def redact_piece(self, piece: str) -> str:
        text, n = self.hint.subn(self.replacement, piece)
        self.count += n
        return text


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d) * (2 if i % 2 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


# IBAN lengths per country (the SWIFT registry); a country not listed is checked by checksum only.
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24,
    "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21,
    "HU": 28, "IE": 22, "IL": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LI": 21,
    "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30,
    "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
    "SE": 24, "SI": 19, "SK": 24, "SM": 27, "TN": 24, "TR": 26, "UA": 29, "VG": 24, "XK": 20,
}


def iban_valid(iban: str) -> bool:
    if not 15 <= len(iban) <= 34 or IBAN_LENGTHS.get(iban[:2], len(iban)) != len(iban):
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


REDACTIONS = (Email, Phone, Card, Iban, Patterns)
