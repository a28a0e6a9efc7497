import pytest

from providers import InputError, InputLimits
from providers.text.validation import validate_texts

LIMITS = InputLimits(max_texts=5, max_text_chars=20, max_total_chars=50)


def test_valid_texts_come_back_as_a_list_in_order() -> None:
    assert validate_texts(("a", "b c"), LIMITS) == ["a", "b c"]


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        ([], "texts is empty"),
        ("just a string", "must be a list of strings"),
        (42, "must be a list of strings"),
        (["a"] * 6, "6 texts in one call; the limit is 5"),
        (["ok", 3, None], "texts[1] is int, texts[2] is NoneType"),
        (["ok", "", "  \n\t", "fine"], "empty or whitespace-only text at positions 1, 2"),
        (["x" * 21], "longer than 20 characters at position 0"),
        (["x" * 20, "y" * 20, "z" * 20], "60 characters in one call; the limit is 50"),
    ],
)
def test_bad_input_is_refused_with_a_message_that_says_what_to_fix(texts: object, message: str) -> None:
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate_texts(texts, LIMITS)


def test_many_bad_positions_are_summarised() -> None:
    limits = InputLimits(max_texts=100)
    with pytest.raises(InputError, match=r"positions 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 and 5 more"):
        validate_texts([" "] * 15, limits)
