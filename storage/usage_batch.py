"""RecordUsage in groups: one user's calls that arrive together share one transaction.

A user's month row is the limit check: written under its lock, held through the commit's WAL
flush, so one user's calls could only run one at a time, each paying a flush. Here the calls
of one user (for one month, by one principal) that arrive while one of theirs is in the
database wait for it, then go together as ONE call of blogstore_record_usage_batch()
(migration 0023): one round trip, one transaction, one flush, the month row updated once.
Each call still gets exactly its own answer: its event, or its own refusal (each event is
checked in order against the totals plus the accepted ones before it).

A call that finds none of its key's calls in the database records itself at once, on its own
thread. The calls that gathered meanwhile go to a drainer thread, which sends their group and
then the next, back to back, for as long as the key's calls keep coming: the next statement
leaves the moment the last is answered, with no thread to wake in between. When none is
waiting then, it waits up to `group_wait` for half of the calls it just answered to come back:
the other half gathers during their statement, so two groups alternate and the database is
not idle while a group's answers travel back and its next calls arrive. Two
calls with one request_id never share a group (the second then sees the first committed, as
it would alone). Should a group fail as a whole (a request_id claimed already, anything
unexpected), each of its calls is recorded alone, in order, event by event.

Outcomes go to a callback (`submit`), run by the thread that recorded the group: the server
answers RecordUsage from there (a deferred reply, server/interceptors.py), so a waiting call
holds no request thread. A drainer counts as one of its principal's calls in flight instead
(`Slots`); with none free, the call that found the key idle drains it itself.
"""

from __future__ import annotations

import contextvars
import dataclasses
import datetime as dt
import json
import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Protocol

from storage.actors import Actor, Caller
from storage.errors import DomainError, Retryable, own_error
from storage.queries import record_usage_group
from storage.replicas import committed, note_commit
from storage.repositories.usage import Limits, MonthTotals
from storage.uow import Database

log = logging.getLogger(__name__)
MAX_GROUP = 64  # calls per statement: bounds the statement's size and its time
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_DELTAS = ("cost_micros", "articles_generated", "input_tokens", "output_tokens", "api_calls")


def _held() -> threading.Lock:
    """A lock already taken: acquire() waits for one release (a cheaper one-shot Event)."""
    lock = threading.Lock()
    lock.acquire()
    return lock


@dataclass(frozen=True)
class Recorded:
    """A RecordUsage answer: the event (attributes as a usage_events row), its month's totals
    after it, the limits in force, and whether it was new (False: a retry's first event)."""

    event: Any
    totals: MonthTotals
    limits: Limits
    created: bool
    lsn: int | None = None  # the commit's WAL position (with replicas): the consistency token


# What a call's outcome goes to: its answer, or what the call alone would have raised.
Done = Callable[[Recorded | BaseException], None]


@dataclass
class _Call:
    caller: Caller
    values: dict[str, Any]
    context: contextvars.Context  # its deadline and trace: its group runs in its context
    done: Done  # called once, in `context`, on the thread that recorded the call's group
    answer: Recorded | None = None
    error: BaseException | None = None

    def finish(self) -> None:
        outcome = self.error if self.error is not None else self.answer
        assert outcome is not None
        try:
            self.done(outcome)
        except Exception:  # one call's reply must not keep the others' back
            log.exception("answering a RecordUsage call failed")


class Slots(Protocol):
    """Each principal's share of the request threads (server/fairness.FairShare): a drain
    takes one, as the calls it answers would have held theirs while they waited."""

    def try_take(self, actor: Actor) -> bool: ...

    def release(self, actor: Actor) -> None: ...


@dataclass
class _Key:
    """One key's calls waiting while a group of theirs is in the database."""

    waiting: list[_Call] = field(default_factory=list)
    expected: int = 0  # the drainer holds the next group until this many wait...
    filled: threading.Lock | None = None  # ...released (by the call making it) when they do


class UsageRecorder:
    """Records usage events, gathering one user's concurrent calls into groups."""

    def __init__(
        self, db: Database, default_limits: tuple[int, int], group_wait: float = 0.0,
        threads: int = 16, slots: Slots | None = None,
    ) -> None:  # fmt: skip
        self.db = db
        self.slots = slots
        self.default_limits = default_limits
        self.group_wait = group_wait  # seconds a group may wait for calls coming back
        self._lock = threading.Lock()
        self._keys: dict[tuple[Any, ...], _Key] = {}  # a key here: a group of it runs
        # One drainer per busy key. A drainer with a group holds a request thread waiting, so
        # as many as the server's request `threads` never keep a key's group from starting
        # (one only waiting for calls to come back gives its thread up within group_wait).
        self._drainers = ThreadPoolExecutor(threads, thread_name_prefix="usage-groups")
        self.groups = 0  # statements sent, and the calls they carried (tests, diagnostics)
        self.calls = 0

    def record(self, caller: Caller, values: dict[str, Any]) -> Recorded:
        """Append the event `values` (server/convert/usage.py record_values) for `caller`,
        waiting for it. Raises what the call alone would: QuotaExceeded, NotFound, ..."""
        answered = _held()
        outcomes: list[Recorded | BaseException] = []

        def done(outcome: Recorded | BaseException) -> None:
            outcomes.append(outcome)
            answered.release()

        self.submit(caller, values, done)
        answered.acquire()
        if isinstance(outcomes[0], BaseException):
            raise outcomes[0]
        if outcomes[0].lsn is not None:
            note_commit(outcomes[0].lsn)
        return outcomes[0]

    def submit(self, caller: Caller, values: dict[str, Any], done: Done) -> None:
        """Append the event `values` for `caller`; `done` gets the outcome, perhaps on another
        thread (a drainer's) and after this returns. A call that finds none of its key's calls
        in the database is recorded here, at once."""
        key = (values["user_id"], values["month"], caller.actor)
        call = _Call(caller, values, contextvars.copy_context(), done)
        with self._lock:
            state = self._keys.get(key)
            if state is None:
                self._keys[key] = _Key()
            else:
                state.waiting.append(call)
                if state.filled is not None and len(state.waiting) >= state.expected:
                    state.filled.release()
                    state.filled = None
        if state is not None:
            return  # the drainer answers it
        self._answer([call])
        call.context.run(call.finish)
        following = self._next(key)
        if not following:
            return
        # A drainer's thread, within the principal's share; past it, this request thread
        # (which holds a share already) drains the key itself.
        actor = caller.actor
        if self.slots is None or self.slots.try_take(actor):
            try:
                self._drainers.submit(self._drain, key, following, actor)
                return
            except RuntimeError:  # no new threads: the interpreter is exiting
                if self.slots is not None:
                    self.slots.release(actor)
        self._drain(key, following)

    def _drain(self, key: tuple[Any, ...], group: list[_Call], slot: Actor | None = None) -> None:
        """Record `key`'s groups one after another on this thread, so that the next one
        leaves as soon as the last is answered, until no call of the key is waiting.

        The calls just answered are on their way back: their clients send the next ones.
        Calls already waiting go at once (the database would idle); with none, the next group
        waits for half of those coming back, for at most `group_wait`, and the other half
        gathers meanwhile. Waiting for all of them left the database idle for their whole way
        back, then the drainer for the statement: at 8 in flight, 0.34 of the no-op against
        0.38 (BENCHMARKS.md, "Issue 17: RecordUsage, round 6")."""
        try:
            while group:
                try:
                    group[0].context.run(self._answer, group)
                finally:
                    for call in group:
                        call.context.run(call.finish)
                group = self._next(key, returning=len(group))
        finally:
            if slot is not None and self.slots is not None:
                self.slots.release(slot)

    @property
    def waiting_calls(self) -> int:
        """Calls waiting for a group of theirs to finish (tests, diagnostics)."""
        with self._lock:
            return sum(len(state.waiting) for state in self._keys.values())

    def _answer(self, group: list[_Call]) -> None:
        """Record `group`: each call gets its answer or its error, whatever happens."""
        try:
            self._run(group)
        except BaseException as error:  # noqa: BLE001 - every call of the group gets it
            for call in group:
                if call.answer is None and call.error is None:
                    call.error = error

    def _next(self, key: tuple[Any, ...], returning: int = 0) -> list[_Call]:
        """The calls of `key` that gathered meanwhile, as the next group (none: the key is
        idle again); when none has, once half of the `returning` have come or `group_wait`
        has passed. One request_id goes once per group: a repeat waits for the next."""
        with self._lock:
            state = self._keys[key]
            state.expected = min((returning + 1) // 2, MAX_GROUP)  # half, rounded up
            wait = returning and self.group_wait > 0 and not state.waiting
            filled = state.filled = _held() if wait else None
        if filled is not None:
            filled.acquire(timeout=self.group_wait)
        with self._lock:
            state.filled = None
            following, seen, rest = [], set(), []
            for call in state.waiting:
                request_id = call.values["request_id"]
                if request_id in seen or len(following) >= MAX_GROUP:
                    rest.append(call)
                else:
                    seen.add(request_id)
                    following.append(call)
            if following:
                state.waiting = rest
            else:
                del self._keys[key]
        return following

    def _run(self, group: list[_Call]) -> None:
        self.groups += 1
        self.calls += len(group)
        try:
            self._record(group)
        except DomainError as error:
            if len(group) == 1 and not isinstance(error, Retryable):
                raise
            # The group as a whole failed, writing nothing: each call alone, in order, event
            # by event (0023). A request_id claimed already (a client's retry, or another
            # process's call with it) fails the group as Retryable (0025); alone, the call
            # gets that claim's first event.
            for call in group:
                try:
                    self._record([call], by_event=True)
                except DomainError as refusal:
                    call.error = refusal

    def _record(self, group: list[_Call], by_event: bool = False) -> None:
        """One statement for `group`; a refused call gets its error, the others their answer.
        Raises when the statement fails as a whole (nothing written)."""
        leader = group[0].caller
        deadlines = [call.caller.deadline for call in group]
        caller = dataclasses.replace(
            leader, deadline=None if None in deadlines else max(d for d in deadlines if d)
        )
        events = [_item(i, call) for i, call in enumerate(group)]
        values = group[0].values
        result = record_usage_group(
            self.db, caller, values["user_id"], values["month"], self.default_limits,
            json.dumps(events, default=str, separators=(",", ":")), by_event=by_event,
        )  # fmt: skip
        lsn = committed()
        create_time = _EPOCH + dt.timedelta(microseconds=result["now"])
        limits = Limits(*result["limits"])
        totals = result["totals"] or [0] * 6
        # Each accepted event's totals: the group's final ones less the accepted after it.
        after = [0] * 6
        answers: list[Recorded | BaseException] = []
        for item, call, outcome in zip(
            reversed(events), reversed(group), reversed(result["results"]), strict=True
        ):
            if outcome is None:
                month = _totals(call.values, [t - a for t, a in zip(totals, after, strict=True)])
                event = _Event(**call.values, id=item["id"], create_time=create_time)
                answers.append(Recorded(event, month, limits, True, lsn))
                for n, name in enumerate(_DELTAS):
                    after[n] += call.values[name]
                after[5] += 1
            elif "code" in outcome:
                answers.append(
                    own_error(outcome["code"], outcome["message"], outcome.get("detail") or "{}")
                )
            else:
                first = _first_event(outcome["event"])
                own = outcome["totals"] or [t - a for t, a in zip(totals, after, strict=True)]
                month = _totals({"user_id": first.user_id, "month": first.month}, own)
                answers.append(Recorded(first, month, limits, False, lsn))
        for call, answer in zip(group, reversed(answers), strict=True):
            if isinstance(answer, BaseException):
                call.error = answer
            else:
                call.answer = answer


class _Event(SimpleNamespace):
    """A usage event's fields as attributes (what event_to_proto reads). Plain attributes: a
    dict's __getattr__ would pay for a failed lookup on each of the reply's 25 reads."""


def _item(i: int, call: _Call) -> dict[str, Any]:
    """The event as one element of the statement's JSON array (the user and month are the
    group's; the rare ids and texts that json cannot take go through default=str)."""
    values = call.values
    return {
        **values, "i": i, "id": str(uuid.uuid4()), "user_id": None, "month": None,
        "request_id": str(values["request_id"]), "event_time": values["event_time"].isoformat(),
        "audit_request_id": call.caller.request_id,
    }  # fmt: skip


def _totals(owner: dict[str, Any], numbers: list[int]) -> MonthTotals:
    return MonthTotals(owner["user_id"], owner["month"], *numbers)


def _first_event(row: dict[str, Any]) -> _Event:
    """A retry's first event, from its row as JSON."""
    return _Event(**{
        **row,
        "event_time": dt.datetime.fromisoformat(row["event_time"]),
        "create_time": dt.datetime.fromisoformat(row["create_time"]),
        "month": dt.date.fromisoformat(row["month"]),
    })  # fmt: skip
