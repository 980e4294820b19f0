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
        assert joined.wrapped(b"[", b"]") == b"[" + sep.join(items) + b"]"
        assert [joined[n] for n in range(len(joined))] == items


def test_an_empty_body_is_its_head_and_tail() -> None:
    assert Joined([], b",").wrapped(b'{"jobs":[', b"]}") == b'{"jobs":[]}'
    assert Joined([b"only"], b",").wrapped(b"[", b"]") == b"[only]"
