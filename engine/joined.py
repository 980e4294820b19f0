"""Many short byte strings kept joined by blocks, for bodies rebuilt after a few changes.

``/jobs`` and ``/metrics`` at 10,000 jobs are joined from 10,000 to 60,000 kept parts, of
which a poll changes a few hundred. Joining all of them again cost half a scrape (one long
call, holding the GIL all along). Here a change joins again only its block of ``BLOCK``
parts; the body is the join of the blocks.

The parts are kept only inside their joined block (with each one's length): at 100,000
jobs a second copy of every part, as its own ``bytes``, was a fifth of the engine's
memory. A change is kept aside until the next ``blocks()``, which splices the changed
parts into their block between slices of the old one.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable

__all__ = ["Joined"]


class Joined:
    BLOCK = 256

    __slots__ = ("_blocks", "_changed", "_count", "_lengths", "_sep")

    def __init__(self, items: Iterable[bytes] = (), sep: bytes = b"") -> None:
        parts = items if isinstance(items, list) else list(items)
        self._sep = sep
        self._count = len(parts)
        self._blocks: list[bytes] = []
        self._lengths: list[array[int]] = []  # each part's length, block by block
        self._changed: dict[int, bytes] = {}  # parts set since the last blocks()
        size = self.BLOCK
        for start in range(0, len(parts), size):
            block = parts[start : start + size]
            self._blocks.append(sep.join(block))
            self._lengths.append(array("Q", map(len, block)))

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: int) -> bytes:
        found = self._changed.get(index)
        if found is not None:
            return found
        if not 0 <= index < self._count:
            raise IndexError(index)
        at, place = divmod(index, self.BLOCK)
        lengths = self._lengths[at]
        start = sum(lengths[:place]) + place * len(self._sep)
        return self._blocks[at][start : start + lengths[place]]

    def __setitem__(self, index: int, value: bytes) -> None:
        if not 0 <= index < self._count:
            raise IndexError(index)
        self._changed[index] = value

    def blocks(self) -> list[bytes]:
        """The items joined by blocks: ``sep.join`` of them is the whole (the list is
        this object's own: read it, do not change it)."""
        if self._changed:
            changed, self._changed = self._changed, {}
            by_block: dict[int, list[int]] = {}
            for index in changed:
                by_block.setdefault(index // self.BLOCK, []).append(index)
            for at, indexes in by_block.items():
                self._splice(at, sorted(indexes), changed)
        return self._blocks

    def _splice(self, at: int, indexes: list[int], changed: dict[int, bytes]) -> None:
        """Block ``at`` again: the changed parts between slices of the old block."""
        block, lengths, gap = self._blocks[at], self._lengths[at], len(self._sep)
        base = at * self.BLOCK
        if len(indexes) == len(lengths):  # every part changed: joined afresh
            parts = [changed[index] for index in indexes]
            self._blocks[at] = self._sep.join(parts)
            self._lengths[at] = array("Q", map(len, parts))
            return
        pieces: list[bytes] = []
        kept_from = 0  # where the old block's next unchanged stretch begins
        place, start = 0, 0  # a place in the block and where its part begins (old block)
        for index in indexes:
            start += sum(lengths[place : index - base]) + (index - base - place) * gap
            place = index - base
            value = changed[index]
            pieces += (block[kept_from:start], value)
            kept_from = start + lengths[place]
            lengths[place] = len(value)
            place, start = place + 1, kept_from + gap
        pieces.append(block[kept_from:])
        self._blocks[at] = b"".join(pieces)

    def pieces(self, head: bytes, tail: bytes) -> list[bytes]:
        """``head + sep.join(items) + tail`` as the pieces whose join it is, nothing
        copied (the blocks are replaced, never changed: the list stays right whatever
        comes next)."""
        out = [head]
        for at, block in enumerate(self.blocks()):
            if at:
                out.append(self._sep)
            out.append(block)
        out.append(tail)
        return out
