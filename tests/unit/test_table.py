from bootc_box.table import format_table


def test_columns_are_padded_and_the_last_is_free() -> None:
    assert format_table([("A", "BB", "LAST"), ("ccc", "d", "a long tail"), ("e", "f", "")]) == (
        "A    BB  LAST\nccc  d   a long tail\ne    f"
    )
