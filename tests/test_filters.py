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
