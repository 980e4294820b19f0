"""The dispatcher's concurrency decision, at the edges of the event loop's iterations."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from engine import current_run
from engine.execution.dispatch import Dispatcher
from engine.execution.runner import Runner
from engine.execution.task import Task
from engine.execution.threads import TaskThreads
from engine.state.history import History
from engine.state.persist import Claim

T0 = datetime(2027, 1, 4, 9, 0, tzinfo=UTC)


class HeldClaims:
    """A claim sink that answers only when told: a writer thread under load."""

    def __init__(self) -> None:
        self.held: list[tuple[list[Claim], Callable[[list[Claim]], None]]] = []

    def __call__(self, claims: list[Claim], back: Callable[[list[Claim]], None]) -> None:
        self.held.append((claims, back))

    def land_all(self) -> None:
        held, self.held = self.held, []
        for claims, back in held:
            for claim in claims:
                claim.outcome = "won"
            back(claims)


async def test_a_run_due_as_the_previous_claim_lands_waits_for_it_instead_of_being_skipped() -> (
    None
):
    """The previous run's claim lands in the same loop iteration as the next run falls due
    (a writer busy after an outage, a loaded machine): that run has not started, so it is
    not "still going"; the next one runs after it, not ``skipped``."""
    started: list[datetime] = []

    async def tick() -> None:
        run = current_run()
        assert run is not None
        started.append(run.scheduled_at)

    history = History()
    threads = TaskThreads(2)
    runner = Runner(history, threads, lambda task: tick)
    sink = HeldClaims()
    dispatcher = Dispatcher(history, runner, sink, lambda: None, lambda: True)
    loop = asyncio.get_running_loop()
    dispatcher.bind(loop)
    task = Task("tests:tick")
    first, second = T0, T0 + timedelta(seconds=1)
    try:
        dispatcher.due("tick", task, [first], grace=3600)
        assert len(sink.held) == 1

        def land_then_due() -> None:
            # The claim lands (its wake-up queued first), then the next fire time is due:
            # both callbacks run in one iteration, before the first run's task has stepped.
            sink.land_all()
            loop.call_soon(dispatcher.due, "tick", task, [second], 3600)
            loop.call_soon(sink.land_all)  # that due's claim (queued or skipped) lands next

        loop.call_soon(land_then_due)
        deadline = loop.time() + 5
        while len(finished := [r for r in history.runs("tick") if r.finished_at]) < 2:
            assert loop.time() < deadline, f"two runs not finished: {history.runs('tick')}"
            await asyncio.sleep(0.01)
        assert sorted((r.scheduled_at, r.status) for r in finished) == [
            (first, "success"),
            (second, "success"),
        ]
        assert started == [first, second]
    finally:
        threads.shutdown()
