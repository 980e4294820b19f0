"""Many short byte strings kept joined by blocks, for bodies rebuilt after a few changes.

``/jobs`` and ``/metrics`` at 10,000 jobs are joined from 10,000 to 60,000 kept parts, of
which a poll changes a few hundred. Joining all of them again cost half a scrape (one long
call, holding the GIL all along). Here a change joins again only its block of ``BLOCK``
parts; the body is the join of the blocks.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["Joined"]


class Joined:
    BLOCK = 256

    def __init__(self, items: Iterable[bytes] = (), sep: bytes = b"") -> None:
        self._items = list(items)
        self._sep = sep
        self._blocks: list[bytes | None] = [None] * -(-len(self._items) // self.BLOCK)

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> bytes:
        return self._items[index]

    def __setitem__(self, index: int, value: bytes) -> None:
        if self._items[index] is not value:
            self._items[index] = value
            self._blocks[index // self.BLOCK] = None

    def blocks(self) -> list[bytes]:
        """The items joined by blocks (none empty): ``sep.join`` of them is the whole."""
        blocks, items, size, sep = self._blocks, self._items, self.BLOCK, self._sep
        for at, block in enumerate(blocks):
            if block is None:
                blocks[at] = sep.join(items[at * size : (at + 1) * size])
        return blocks  # type: ignore[return-value]  # every block is joined now

    def wrapped(self, head: bytes, tail: bytes) -> bytes:
        """``head + sep.join(items) + tail``, copying the whole once."""
        pieces = list(self.blocks())
        if not pieces:
            return head + tail
        pieces[0] = head + pieces[0]
        pieces[-1] = pieces[-1] + tail
        return self._sep.join(pieces)
