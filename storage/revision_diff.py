"""Unified diffs of article markdown (DiffArticleRevision), bounded in work.

difflib's matcher is quadratic or worse on some inputs: two 10,000-line documents drawn from
~120 distinct lines in different orders took 9.8 s, and markdown may be 2 MiB (a million short
lines). So difflib's work is counted as it runs (`_BudgetedMatcher`: each find_longest_match
call costs the lines it visits plus the b2j entries it walks, known beforehand from prefix
sums), under WORK_BUDGET steps in all:

1. The whole documents, under a quarter of the budget: then the answer is exactly
   difflib.unified_diff's. Edits of ordinary articles end here.
2. Else only the changed part (between the longest common beginning and end, plus the context
   lines), under the rest: an edit in the middle of a long document costs what the edit costs.
3. Else the diff is coarse: one hunk that replaces the whole changed part, from the first
   differing line to the last. Still a correct diff (it applies as a patch), only not
   minimal; `TextDiff.coarse` says so.

The budget counts steps, not seconds, so the same two documents always get the same answer.
Measured here (2 shared cores): two different 2 MiB documents take 0.5-1.7 s, mostly
splitting and formatting (README "One revision, and what changed since").

Output follows difflib.unified_diff (same matcher, grouping and hunk format), with one fix:
a last line without a newline is followed by "\\ No newline at end of file", as in GNU diff.
"""

from __future__ import annotations

import difflib
import itertools
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

DEFAULT_CONTEXT_LINES = 3
MAX_CONTEXT_LINES = 1000
# Lines visited (x _LINE_STEPS) plus b2j entries walked: ~0.3-0.6 s of one core here.
WORK_BUDGET = 2_000_000
# What visiting one line of `a` costs in find_longest_match, in b2j entries walked (it makes
# a dict per line): measured, a line of all-junk input took as long as ~3 entries.
_LINE_STEPS = 3
NO_NEWLINE = "\\ No newline at end of file\n"

Opcode = tuple[str, int, int, int, int]


@dataclass(frozen=True)
class TextDiff:
    text: str  # empty when both texts are the same
    coarse: bool = False  # over the work budget: one hunk over the whole changed part


class _OverBudget(Exception):
    pass


class _BudgetedMatcher(difflib.SequenceMatcher):
    """difflib's matcher that stops (raises _OverBudget) once its work passes `budget`."""

    def __init__(self, a: Sequence[str], b: Sequence[str], budget: int) -> None:
        if _LINE_STEPS * len(a) > budget:  # the first call alone visits every line of a
            raise _OverBudget
        super().__init__(None, a, b)  # autojunk on, as difflib.unified_diff has it
        b2j = self.b2j  # pyright: ignore[reportAttributeAccessIssue]  # documented, not typed
        walks = {line: len(js) for line, js in b2j.items()}.get
        # walked[i]: the b2j entries find_longest_match walks for a[:i] (an upper bound).
        self._walked = array(
            "q", itertools.accumulate(map(walks, a, itertools.repeat(0)), initial=0)
        )
        self._left = budget

    def find_longest_match(self, alo=0, ahi=None, blo=0, bhi=None):
        ahi = len(self._walked) - 1 if ahi is None else ahi
        self._left -= _LINE_STEPS * (ahi - alo) + self._walked[ahi] - self._walked[alo]
        if self._left < 0:
            raise _OverBudget
        return super().find_longest_match(alo, ahi, blo, bhi)


def split_lines(text: str) -> list[str]:
    """Lines with their '\\n' (only '\\n' ends a line); the last may have none."""
    lines = [line + "\n" for line in text.split("\n")]
    lines[-1] = lines[-1][:-1]
    if not lines[-1]:
        lines.pop()
    return lines


def unified_diff(
    old: str, new: str, *, old_label: str, new_label: str,
    context: int = DEFAULT_CONTEXT_LINES, budget: int = WORK_BUDGET,
) -> TextDiff:  # fmt: skip
    """The unified diff from `old` to `new`, with `context` lines around each change."""
    if old == new:
        return TextDiff("")
    a, b = split_lines(old), split_lines(new)
    try:  # exactly difflib.unified_diff's answer, when a quarter of the budget affords it
        groups = list(_BudgetedMatcher(a, b, budget // 4).get_grouped_opcodes(context))
        return TextDiff("".join(_format(groups, a, b, 0, old_label, new_label)))
    except _OverBudget:
        pass
    shortest = min(len(a), len(b))
    head = 0
    while head < shortest and a[head] == b[head]:
        head += 1
    tail = 0
    while tail < shortest - head and a[-1 - tail] == b[-1 - tail]:
        tail += 1
    # The changed part with its context: only this goes to the matcher.
    lo = max(0, head - context)
    a_hi, b_hi = min(len(a), len(a) - tail + context), min(len(b), len(b) - tail + context)
    try:
        matcher = _BudgetedMatcher(a[lo:a_hi], b[lo:b_hi], budget - budget // 4)
        groups = list(matcher.get_grouped_opcodes(context))
        coarse = False
    except _OverBudget:
        groups = [
            _one_hunk(head - lo, a_hi - lo, b_hi - lo, len(a) - tail - lo, len(b) - tail - lo)
        ]
        coarse = True
    lines = _format(groups, a, b, lo, old_label, new_label)
    return TextDiff("".join(lines), coarse)


def _one_hunk(head: int, a_end: int, b_end: int, a_tail: int, b_tail: int) -> list[Opcode]:
    """Opcodes replacing lines [head, a_tail) of a by [head, b_tail) of b, with the common
    lines before and after (already cut to the context) kept as context."""
    tag = "replace" if head < a_tail and head < b_tail else "delete" if head < a_tail else "insert"
    group: list[Opcode] = [(tag, head, a_tail, head, b_tail)]
    if head:
        group.insert(0, ("equal", 0, head, 0, head))
    if a_tail < a_end:
        group.append(("equal", a_tail, a_end, b_tail, b_end))
    return group


def _format(
    groups: list[list[Opcode]], a: list[str], b: list[str], offset: int,
    old_label: str, new_label: str,
) -> Iterator[str]:  # fmt: skip
    """difflib.unified_diff's lines for `groups`, whose indexes are `offset` into a and b."""
    if not groups:
        return
    yield f"--- {old_label}\n"
    yield f"+++ {new_label}\n"
    for group in groups:
        first, last = group[0], group[-1]
        old_range = _range(first[1] + offset, last[2] + offset)
        new_range = _range(first[3] + offset, last[4] + offset)
        yield f"@@ -{old_range} +{new_range} @@\n"
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                yield from _marked(" ", a[offset + i1 : offset + i2])
                continue
            if tag in ("replace", "delete"):
                yield from _marked("-", a[offset + i1 : offset + i2])
            if tag in ("replace", "insert"):
                yield from _marked("+", b[offset + j1 : offset + j2])


def _marked(mark: str, lines: list[str]) -> Iterator[str]:
    """The lines, each after `mark` (only a document's last line can lack its newline)."""
    if lines:
        text = mark + mark.join(lines)
        yield text if text.endswith("\n") else f"{text}\n{NO_NEWLINE}"


def _range(start: int, stop: int) -> str:
    """difflib's unified range: 'start,length', 1-based; an empty range names the line before."""
    length = stop - start
    if length == 1:
        return str(start + 1)
    return f"{start + 1 if length else start},{length}"
