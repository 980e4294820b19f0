"""Bodies joined by blocks read the same as joined whole, whatever changed where."""

from __future__ import annotations

import random

import pytest

from engine.joined import Joined


@pytest.mark.parametrize("sep", [b"", b","])
def test_a_body_joined_by_blocks_follows_every_change_as_a_whole_join_would(sep: bytes) -> None:
    draw = random.Random(11)
    items = [b"job-%d" % n for n in range(1000)]
    joined = Joined(items, sep)
    assert sep.join(joined.blocks()) == sep.join(items)
    # Changes at the edges of blocks, inside them, several in one block, none at all.
    for places in ([0], [255, 256], [999], [511, 512, 767], draw.sample(range(1000), 40), []):
        for index in places:
            items[index] = b"changed-%d-%d" % (index, draw.randrange(10**6))
            joined[index] = items[index]
        assert sep.join(joined.blocks()) == sep.join(items), places
        assert b"".join(joined.pieces(b"[", b"]")) == b"[" + sep.join(items) + b"]"
        assert [joined[n] for n in range(len(joined))] == items


def test_an_empty_body_is_its_head_and_tail() -> None:
    assert b"".join(Joined([], b",").pieces(b'{"jobs":[', b"]}")) == b'{"jobs":[]}'
    assert b"".join(Joined([b"only"], b",").pieces(b"[", b"]")) == b"[only]"


@pytest.mark.parametrize("sep", [b"", b",", b",\n"])
def test_parts_of_any_length_read_back_as_set_through_many_rounds_of_changes(sep: bytes) -> None:
    """Only the joined blocks and the lengths are kept: every part reads back, and every
    body is the whole join, with empty parts, parts set twice and blocks left partial."""
    draw = random.Random(7)

    def part() -> bytes:
        return bytes(draw.randrange(97, 123) for _ in range(draw.choice([0, 1, 3, 40, 300])))

    items = [part() for _ in range(777)]  # three full blocks and a partial one
    joined = Joined(items, sep)
    for _ in range(60):
        for index in draw.sample(range(len(items)), draw.choice([1, 2, 9, 200, 777])):
            items[index] = part()
            joined[index] = items[index]
            if draw.random() < 0.1:  # set again before the blocks are joined
                items[index] = part()
                joined[index] = items[index]
        if draw.random() < 0.5:  # read while changes wait for the next join
            some = draw.sample(range(len(items)), 20)
            assert [joined[n] for n in some] == [items[n] for n in some]
        assert sep.join(joined.blocks()) == sep.join(items)
        assert [joined[n] for n in range(len(joined))] == items


def test_a_place_outside_the_parts_is_refused() -> None:
    joined = Joined([b"a", b"b"], b",")
    with pytest.raises(IndexError):
        joined[2] = b"c"
    with pytest.raises(IndexError):
        joined[2]
    assert b"".join(joined.pieces(b"[", b"]")) == b"[a,b]"
