import pytest

from chat.filters import SafetyPipeline

ANSWER = "Sure. <think>the user wants X</think>Here is **X**.\n- first\n2. second\nDone [GENERATION_ERROR] garbage"


def run(names, text, size):
    pipeline = SafetyPipeline(names)
    out = "".join(pipeline.feed(text[i : i + size]) for i in range(0, len(text), size)) + pipeline.finish()
    return out, pipeline.report()


@pytest.mark.parametrize("size", [1, 2, 4, 9, 1000])
def test_default_filters_remove_reasoning_and_error_tail_at_any_chunking(size):
    out, report = run(["think_blocks", "generation_error"], ANSWER, size)
    assert out == "Sure. Here is **X**.\n- first\n2. second\nDone "
    assert [r["label"] for r in report] == [
        "1 reasoning block removed",
        "generation error marker and the text after it removed",
    ]


@pytest.mark.parametrize("size", [1, 3, 1000])
def test_list_marker_filter_is_opt_in_and_strips_line_starts(size):
    out, report = run(["list_markers"], "Intro - not a marker\n- first\n  * second\n10) third\n", size)
    assert out == "Intro - not a marker\nfirst\nsecond\nthird\n"
    assert report == [{"filter": "list_markers", "count": 3, "label": "3 list markers removed"}]


def test_text_that_only_looks_like_the_start_of_a_tag_is_kept():
    out, report = run(["think_blocks", "generation_error"], "a < b and [GEN] and <thin", 1)
    assert out == "a < b and [GEN] and <thin"
    assert report == []


def test_an_unclosed_reasoning_block_is_dropped_to_the_end():
    out, _ = run(["think_blocks"], "Answer <think>still thinking", 3)
    assert out == "Answer "


def test_an_unknown_filter_name_is_a_clear_configuration_error():
    with pytest.raises(ValueError, match="Unknown safety filter"):
        SafetyPipeline(["think_blocks", "nope"])


def redact(name, text, size=1000):
    out, report = run([name], text, size)
    return out, sum(r["count"] for r in report)


@pytest.mark.parametrize("size", [1, 5, 1000])
def test_email_addresses_are_removed_and_counted(size):
    out, report = run(["email"], "Write to jane.doe+hr@example.co.uk or ops@acme.io. Not a@b or @handle.", size)
    assert out == "Write to [email removed] or [email removed]. Not a@b or @handle."
    assert report == [{"filter": "email", "count": 2, "label": "2 emails removed"}]


@pytest.mark.parametrize(
    "number",
    ["+1 415-555-2671", "(415) 555-2671", "415.555.2671", "+44 20 7946 0958", "+49 30 901820", "+33 1 42 68 53 00"],
)
def test_valid_phone_numbers_are_removed(number):
    assert redact("phone", f"Call {number} today.", 3) == ("Call [phone removed] today.", 1)


@pytest.mark.parametrize("text", ["Call 555-0100 today.", "In 2024-01-15 we had 1234567 rows.", "Version 3.14.159"])
def test_numbers_that_are_no_valid_phone_number_are_kept(text):
    assert redact("phone", text, 2) == (text, 0)


@pytest.mark.parametrize("number", ["4111 1111 1111 1111", "5500-0000-0000-0004", "378282246310005", "6011 0009 9013 9424"])
def test_card_numbers_passing_luhn_are_removed_with_or_without_separators(number):
    assert redact("card", f"Card: {number}, thanks", 4) == ("Card: [card removed], thanks", 1)


@pytest.mark.parametrize("number", ["4111 1111 1111 1112", "5500-0000-0000-0005", "1234 5678 9012"])
def test_numbers_failing_luhn_or_too_short_are_kept(number):
    assert redact("card", f"Card: {number}, thanks", 4) == (f"Card: {number}, thanks", 0)


@pytest.mark.parametrize("iban", ["DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432", "FR14 2004 1010 0505 0001 3M02 606", "NL91 ABNA 0417 1643 00"])
def test_ibans_passing_their_checksum_are_removed(iban):
    assert redact("iban", f"Pay to {iban} please", 3) == ("Pay to [IBAN removed] please", 1)


@pytest.mark.parametrize("iban", ["DE89 3704 0044 0532 0130 01", "GB82WEST12345698765433", "DE89 3704 0044"])
def test_ibans_failing_their_checksum_or_length_are_kept(iban):
    assert redact("iban", f"Pay to {iban} please", 3) == (f"Pay to {iban} please", 0)


def test_an_iban_ends_where_its_groups_end_even_before_capitals():
    assert redact("iban", "DE89 3704 0044 0532 0130 00 IS MINE", 2) == ("[IBAN removed] IS MINE", 1)


def test_configured_patterns_are_removed_inside_words(settings):
    settings.PORTAL_SAFETY_PATTERNS = [r"ACME-\d{4}", r"sk-[A-Za-z0-9]{8,}"]
    out, report = run(["patterns"], "Ticket ACME-1234 uses key sk-abcdefgh1234.", 3)
    assert out == "Ticket [text removed] uses key [text removed]."
    assert report[0]["label"] == "2 blocked patterns removed"


def test_only_the_run_a_match_could_still_need_is_held_back():
    pipeline = SafetyPipeline(["email"])
    assert pipeline.feed("Hello there, mail me at jane") == "Hello there, mail me at "
    assert pipeline.feed(".doe@example.com and") == "[email removed] "
    assert pipeline.finish() == "and"
