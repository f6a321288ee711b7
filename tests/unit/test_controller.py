"""The controller without a cluster: a real engine on a temporary SQLite store, a fake clock,
and an in-memory stand-in for the one apiserver call it makes (replace status).

Each test drives `step()` the way the daemon loop does and reads what was written and which
events were posted: open, close with every step, force-close, a step stuck past the
close timeout and then forced, engine failures retried then failed, specs the models
reject, deletion of a failed job.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from mljob_operator.api import FORCE_CLOSE_ANNOTATION, CloseStep, JobState, MLJobStatus, Reason
from mljob_operator.controller import JobController, Timings
from mljob_operator.events import Event
from mljob_operator.job_status import JobStatusWriter
from mljob_operator.kube import KubeError
from mljob_operator.runtime import JobRuntime
from mljob_operator.settings import OperatorSettings
from mljob_operator.store import open_store
from tests.unit.polling import until

T0 = datetime(2026, 12, 1, tzinfo=UTC)
SPEC: dict[str, Any] = {
    "analysisConfig": {"bucketSpan": "1m", "detectors": [{"function": "count"}]},
    "closeTimeout": "1m",
}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class Apiserver:
    """Holds the object; `replace_status` is what the controller calls, as on a cluster."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.body: dict[str, Any] = {
            "metadata": {
                "name": "j",
                "namespace": "ns",
                "generation": 1,
                "annotations": {},
                "resourceVersion": "1",
            },
            "spec": copy.deepcopy(spec),
        }
        self.writes: list[dict[str, Any]] = []

    def _changed(self) -> None:
        meta = self.body["metadata"]
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)

    async def replace_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        assert (namespace, name) == ("ns", "j")
        self.writes.append(status)
        self.body["status"] = status
        self._changed()

    def edit_spec(self, **changes: Any) -> None:
        self.body["spec"].update(changes)
        self.body["metadata"]["generation"] += 1
        self._changed()

    def annotate_force(self, value: str) -> None:
        self.body["metadata"]["annotations"][FORCE_CLOSE_ANNOTATION] = value
        self._changed()

    @property
    def status(self) -> MLJobStatus:
        return MLJobStatus.model_validate(self.body.get("status") or {})


class Harness:
    def __init__(
        self,
        tmp_path: Path,
        spec: dict[str, Any] = SPEC,
        runtime: JobRuntime | None = None,
        fail_at: str | None = None,
    ) -> None:
        self.clock = Clock()
        self.api = Apiserver(spec)
        self.runtime = runtime or JobRuntime(open_store(tmp_path))
        settings = OperatorSettings(
            data_dir=tmp_path,
            http_host="127.0.0.1",
            http_port=0,
            status_interval_s=0.0,
            fault_kill_at=None,
            fault_fail_at=fail_at,
            step_delay_s=0.0,
        )
        self.events: list[Event] = []
        self.controller = JobController(
            "ns",
            "j",
            self.runtime,
            self.api,
            settings,
            clock=self.clock,
            timings=Timings(idle_poll_s=0.01, force_poll_s=0.01, engine_backoff_s=(0, 0, 0)),
        )
        self.controller.emit = self.events.append

    def body(self) -> dict[str, Any]:
        return self.api.body

    async def settle(self, limit: int = 30) -> int:
        """Step until the lifecycle has nothing to do; the number of actions taken."""
        for taken in range(limit):
            if not await self.controller.step(self.body):
                return taken
        raise AssertionError(f"still acting after {limit} steps")

    def reasons(self) -> list[str]:
        return [e.reason for e in self.events]

    def condition(self, type_: str) -> tuple[str, str]:
        cond = self.api.status.condition(type_)
        assert cond is not None
        return cond.status.value, cond.reason


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), timeout=30))


def data(minutes: int) -> bytes:
    start = int(T0.timestamp())
    return b"\n".join(orjson.dumps({"time": start + 30 * i}) for i in range(2 * minutes))


def test_open_then_close_runs_every_step_and_says_so(tmp_path: Path) -> None:
    async def test() -> None:
        h = Harness(tmp_path)
        assert await h.settle() == 2, "beginOpen, open"
        assert len(h.api.writes) == 1, "a fast open writes opened only"
        assert h.api.status.state == "opened"
        assert h.condition("Ready") == ("True", Reason.OPENED)
        assert h.reasons() == [Reason.OPENED], "a fast open posts no Opening Event"
        counts = await h.runtime.post_data("ns/j", data(30))
        assert counts.processed_record_count == 60

        h.clock.advance(seconds=5)
        h.api.edit_spec(state="closed")
        writes_before = len(h.api.writes)
        assert await h.settle() == 6, "beginClose, four steps, finishClose"
        status = h.api.status
        assert status.state == "closed"
        assert status.closed is True
        close = status.last_close
        assert close is not None
        assert list(close.steps) == [s.value for s in CloseStep]
        assert close.trigger == "spec"
        assert close.started_at == T0 + timedelta(seconds=5)
        assert close.duration_seconds == 0.0, "the fake clock did not move during the close"
        assert close.records_flushed is not None
        assert close.snapshot_id is not None
        assert status.model_snapshot_id == close.snapshot_id
        assert status.data_counts.processed_record_count == 60
        assert len(h.api.writes) - writes_before == 2, "closing, then closed with every step"
        assert h.condition("Closed") == ("True", Reason.CLOSED)
        assert h.reasons()[-1] == Reason.CLOSED
        assert Reason.CLOSING not in h.reasons(), "a fast close posts no Closing Event"
        assert close.snapshot_id in h.events[-1].message
        assert not h.runtime.is_loaded("ns/j"), "a closed job keeps no model in memory"

        h.api.edit_spec(state="opened")
        assert await h.settle() == 2
        assert h.api.status.last_open is not None
        assert h.api.status.last_open.restored_snapshot_id == close.snapshot_id
        assert close.snapshot_id in h.events[-1].message

    run(test)


def test_force_close_of_an_open_job_skips_housekeeping(tmp_path: Path) -> None:
    async def test() -> None:
        h = Harness(tmp_path)
        await h.settle()
        await h.runtime.post_data("ns/j", data(5))
        h.api.annotate_force("v1")
        h.api.edit_spec(state="closed")
        assert await h.settle() == 1
        status = h.api.status
        assert status.state == "closed"
        assert status.last_close is not None
        assert status.last_close.forced is True
        assert status.last_close.steps == {}
        assert status.last_handled_force_close == "v1"
        assert status.model_snapshot_id is None
        assert h.condition("Closed") == ("True", Reason.FORCE_CLOSED)
        assert h.events[-1].type == "Warning"
        assert "v1" in h.events[-1].message

        h.api.edit_spec(state="opened")
        await h.settle()
        h.api.edit_spec(state="closed")
        await h.settle()
        assert h.api.status.last_close is not None
        assert h.api.status.last_close.forced is False, "a handled value does not force again"

    run(test)


class StuckFlush(JobRuntime):
    """A runtime whose flush step blocks until released, like an engine call that hangs."""

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(open_store(tmp_path))
        self.started = asyncio.Event()
        self.release_step = asyncio.Event()

    async def run_step(self, job_id: str, close_id: str, step: CloseStep) -> dict[str, Any]:
        if step == CloseStep.FLUSH:
            self.started.set()
            await self.release_step.wait()
        return await super().run_step(job_id, close_id, step)


def test_a_stuck_step_times_out_then_a_new_force_value_closes_at_once(tmp_path: Path) -> None:
    async def test() -> None:
        runtime = StuckFlush(tmp_path)
        h = Harness(tmp_path, runtime=runtime)
        await h.settle()
        await h.runtime.post_data("ns/j", data(5))
        h.api.edit_spec(state="closed")
        stepping = asyncio.create_task(h.settle())
        await asyncio.wait_for(runtime.started.wait(), 5)
        assert h.api.status.state == "closing"
        await until(lambda: Reason.CLOSING in h.reasons(), "a slow close to say it is closing")

        h.controller.timings = Timings(force_poll_s=30)
        h.clock.advance(minutes=2)
        h.controller.wake.set()
        await until(lambda: Reason.TIMED_OUT in h.reasons(), "the timeout to be reported")
        close = h.api.status.last_close
        assert close is not None
        assert close.timed_out is True
        assert h.condition("Closing") == ("True", Reason.TIMED_OUT)
        assert FORCE_CLOSE_ANNOTATION in h.events[-1].message
        assert not stepping.done(), "housekeeping goes on after the timeout"

        h.api.annotate_force("now")
        h.controller.wake.set()  # what the watch event does: no 30 s poll is waited for
        await asyncio.wait_for(stepping, 5)
        status = h.api.status
        assert status.state == "closed"
        assert status.last_close is not None
        assert status.last_close.forced is True
        assert status.last_close.close_id == close.close_id, "the close in progress was forced"
        assert status.last_handled_force_close == "now"

        h.api.edit_spec(state="opened")
        reopening = asyncio.create_task(h.settle())
        await asyncio.sleep(0.05)
        assert not reopening.done(), "a reopen waits for the abandoned step"
        runtime.release_step.set()
        await asyncio.wait_for(reopening, 5)
        assert h.api.status.state == "opened"

    run(test)


def test_engine_failures_are_retried_then_fail_the_job_and_close_needs_force(
    tmp_path: Path,
) -> None:
    async def test() -> None:
        h = Harness(tmp_path, fail_at="flush")
        await h.settle()
        h.api.edit_spec(state="closed")
        taken = await h.settle()
        assert taken == 1 + 3 + 1 + 1, (
            "beginClose, three failures retried, the fourth fails, refuse"
        )
        status = h.api.status
        assert status.state == "failed"
        assert h.condition("Failed") == ("True", Reason.ENGINE_ERROR)
        assert h.condition("Closed") == ("False", Reason.CLOSE_REFUSED)
        failed = status.condition("Failed")
        assert failed is not None
        assert "injected failure in flush" in failed.message
        assert h.reasons()[-2:] == [Reason.ENGINE_ERROR, Reason.CLOSE_REFUSED]
        assert await h.settle() == 0, "refused once per generation"

        h.api.annotate_force("f1")
        assert await h.settle() == 1
        assert h.api.status.state == "closed"
        assert h.api.status.last_close is not None
        assert h.api.status.last_close.forced is True

    run(test)


def test_a_spec_the_models_reject_fails_once_and_a_fixed_spec_opens(tmp_path: Path) -> None:
    async def test() -> None:
        bad = {**SPEC, "analysisConfig": {"detectors": [{"function": "nonsense"}]}}
        h = Harness(tmp_path, spec=bad)
        assert await h.settle() == 1
        assert h.api.status.state == "failed"
        assert h.condition("Ready") == ("False", Reason.INVALID_SPEC)
        failed = h.api.status.condition("Failed")
        assert failed is not None
        assert failed.message.startswith("Invalid spec: spec.analysisConfig.detectors.0.function")
        assert await h.settle() == 0, "no status write loop"
        assert len(h.api.writes) == 1

        h.api.edit_spec(analysisConfig=SPEC["analysisConfig"])
        assert await h.settle() == 2
        assert h.api.status.state == "opened"
        assert h.condition("Failed") == ("False", Reason.NOT_FAILED)

    run(test)


def test_a_spec_the_engine_rejects_fails_with_invalid_spec(tmp_path: Path) -> None:
    async def test() -> None:
        h = Harness(tmp_path, spec={**SPEC, "analysisLimits": {"modelMemoryLimit": "0mb"}})
        await h.settle()
        assert h.api.status.state == "failed"
        assert h.condition("Failed") == ("True", Reason.INVALID_SPEC)
        assert not h.runtime.is_loaded("ns/j")

    run(test)


def test_upkeep_writes_the_counts_of_an_idle_job_only_when_they_change(tmp_path: Path) -> None:
    async def test() -> None:
        h = Harness(tmp_path)
        await h.settle()
        await h.runtime.post_data("ns/j", data(10))
        await h.controller.upkeep(h.body())
        assert h.api.status.data_counts.processed_record_count == 20
        writes = len(h.api.writes)
        await h.controller.upkeep(h.body())
        assert len(h.api.writes) == writes

    run(test)


def test_upkeep_of_an_idle_job_does_nothing_until_its_object_or_engine_changes(
    tmp_path: Path,
) -> None:
    async def test() -> None:
        h = Harness(tmp_path)
        await h.settle()
        observed: list[int] = []
        observe = h.controller.observe

        def counting(body: Any, deleting: bool = False) -> Any:
            observed.append(1)
            return observe(body, deleting)

        h.controller.observe = counting  # type: ignore[method-assign]
        for _ in range(3):
            await h.controller.upkeep(h.body())
        assert len(observed) == 1, "looked once; nothing changed since"
        await h.runtime.post_data("ns/j", data(10))
        await h.controller.upkeep(h.body())
        assert len(observed) == 2, "data moved the engine's counts"
        assert h.api.status.data_counts.processed_record_count == 20
        await h.controller.upkeep(h.body())
        assert len(observed) == 3, "its own status write moved the object's version"
        await h.controller.upkeep(h.body())
        assert len(observed) == 3
        h.api.edit_spec(description="changed")
        await h.controller.upkeep(h.body())
        assert len(observed) == 4, "a spec change"
        assert h.api.status.observed_generation == 2

    run(test)


def test_deleting_a_failed_job_force_closes_it(tmp_path: Path) -> None:
    async def test() -> None:
        h = Harness(tmp_path, fail_at="flush")
        await h.settle()
        h.api.edit_spec(state="closed")
        await h.settle()
        assert h.api.status.state == "failed"
        await h.controller.close_for_deletion(h.body, h.events.append)
        assert h.api.status.state == "closed"
        assert h.api.status.last_close is not None
        assert h.api.status.last_close.trigger == "deletion"
        assert h.api.status.last_close.forced is True

    run(test)


def test_a_force_value_set_on_a_closed_job_is_recorded_not_kept_for_later(
    tmp_path: Path,
) -> None:
    async def test() -> None:
        h = Harness(tmp_path, spec={**SPEC, "state": "closed"})
        await h.settle()
        assert h.api.status.state == "closed"
        h.api.annotate_force("stale")
        assert await h.settle() == 1
        assert h.api.status.last_handled_force_close == "stale"
        assert h.events[-1].reason == Reason.FORCE_CLOSE_IGNORED
        h.api.edit_spec(state="opened")
        await h.settle()
        h.api.edit_spec(state="closed")
        await h.settle()
        close = h.api.status.last_close
        assert close is not None
        assert close.forced is False
        assert close.snapshot_id is not None, "housekeeping ran"

    run(test)


def test_an_object_recreated_under_the_same_name_does_not_inherit_the_model(
    tmp_path: Path,
) -> None:
    async def test() -> None:
        first = Harness(tmp_path)
        first.controller.uid = "uid-1"
        await first.settle()
        await first.runtime.post_data("ns/j", data(30))
        first.api.edit_spec(state="closed")
        await first.settle()
        assert first.api.status.model_snapshot_id is not None
        first.runtime.close()

        second = Harness(tmp_path)
        second.controller.uid = "uid-2"
        await second.settle()
        last_open = second.api.status.last_open
        assert last_open is not None
        assert last_open.restored_snapshot_id is None, "a new model, not the old object's"
        stats = second.runtime.stats("ns/j")
        assert stats is not None
        assert stats[0].processed_record_count == 0
        second.runtime.close()

    run(test)


def test_staged_progress_is_written_only_if_still_the_latest_after_a_while() -> None:
    async def test() -> None:
        api = Apiserver(SPEC)
        writer = JobStatusWriter("ns", "j", api, interval_s=0.0, progress_s=0.05)
        announced: list[str] = []
        writer.stage(MLJobStatus(state=JobState.OPENING), lambda: announced.append("opening"))
        await writer.write(MLJobStatus(state=JobState.OPENED))
        await asyncio.sleep(0.1)
        assert [w["state"] for w in api.writes] == ["opened"], "superseded before it was due"
        assert announced == [], "announced only with its write"
        writer.stage(MLJobStatus(state=JobState.OPENING), lambda: announced.append("opening"))
        assert writer.current is not None
        assert writer.current.state == JobState.OPENING, "the truth at once"
        await until(lambda: len(api.writes) == 2, "the staged status to be written")
        assert api.writes[-1]["state"] == "opening"
        assert announced == ["opening"]
        writer.stage(MLJobStatus(state=JobState.CLOSING))
        await until(lambda: len(api.writes) == 3, "the next staged status to be written")
        assert announced == ["opening"], "a status staged without announcement announces nothing"
        writer.close()

    run(test)


def test_a_written_status_is_announced_only_if_it_stands_for_a_while() -> None:
    async def test() -> None:
        api = Apiserver(SPEC)
        writer = JobStatusWriter("ns", "j", api, interval_s=0.0, progress_s=0.05)
        announced: list[str] = []
        await writer.write(MLJobStatus(state=JobState.CLOSING), lambda: announced.append("1"))
        writer.stage(MLJobStatus(state=JobState.CLOSING))
        await writer.write(MLJobStatus(state=JobState.CLOSED))
        await asyncio.sleep(0.1)
        assert announced == [], "superseded by a write before it was due"
        await writer.write(MLJobStatus(state=JobState.CLOSING), lambda: announced.append("2"))
        writer.stage(MLJobStatus(state=JobState.CLOSING))
        await until(
            lambda: announced == ["2"] and len(api.writes) == 4,
            "a status that stands to be announced, its staged progress written",
        )
        assert [w["state"] for w in api.writes] == ["closing", "closed", "closing", "closing"]
        await writer.write(MLJobStatus(state=JobState.CLOSING), lambda: announced.append("3"))
        writer.close()
        await asyncio.sleep(0.1)
        assert announced == ["2"], "a closed writer announces nothing more"

    run(test)


class GatedApiserver(Apiserver):
    """Holds every `closing` status write until `gate` is set."""

    def __init__(self) -> None:
        super().__init__(SPEC)
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def replace_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        if status["state"] == "closing":
            self.entered.set()
            await self.gate.wait()
        await super().replace_status(namespace, name, status)


def test_a_write_waiting_behind_an_announcing_one_still_supersedes_it() -> None:
    async def test() -> None:
        api = GatedApiserver()
        writer = JobStatusWriter("ns", "j", api, interval_s=0.0, progress_s=0.02)
        announced: list[str] = []
        first = asyncio.ensure_future(
            writer.write(MLJobStatus(state=JobState.CLOSING), lambda: announced.append("x"))
        )
        await asyncio.wait_for(api.entered.wait(), 5)
        second = asyncio.ensure_future(writer.write(MLJobStatus(state=JobState.CLOSED)))
        await asyncio.sleep(0)  # it runs up to the writer's lock, held by the first
        api.gate.set()
        await asyncio.wait_for(asyncio.gather(first, second), 5)
        await asyncio.sleep(0.1)
        assert [w["state"] for w in api.writes] == ["closing", "closed"]
        assert announced == [], "the closed write came after the closing one: no Closing"

    run(test)


def test_a_staged_write_in_flight_never_lands_after_a_newer_status() -> None:
    async def test() -> None:
        api = GatedApiserver()
        writer = JobStatusWriter("ns", "j", api, interval_s=0.0, progress_s=0.01)
        writer.stage(MLJobStatus(state=JobState.CLOSING))
        await asyncio.sleep(0.05)
        final = asyncio.ensure_future(writer.write(MLJobStatus(state=JobState.CLOSED)))
        await asyncio.sleep(0.05)
        api.gate.set()
        await asyncio.wait_for(final, 5)
        assert [w["state"] for w in api.writes] == ["closing", "closed"], "in order"
        await asyncio.sleep(0.05)
        assert api.writes[-1]["state"] == "closed"

    run(test)


def test_an_unreachable_apiserver_is_retried_with_backoff_not_on_every_post(
    tmp_path: Path,
) -> None:
    """While the apiserver is down, data keeps waking the controller; its retries follow
    the backoff regardless, and the close it was doing finishes once the apiserver is back."""

    async def test() -> None:
        h = Harness(tmp_path)
        await h.settle()
        h.controller.timings = Timings(idle_poll_s=0.01, kube_backoff_s=(0.05, 0.1, 0.2))
        failed: list[float] = []
        up = h.api.replace_status

        async def down(namespace: str, name: str, status: dict[str, Any]) -> None:
            failed.append(asyncio.get_running_loop().time())
            raise KubeError(503, "Kubernetes API unreachable: connection refused")

        h.api.replace_status = down  # type: ignore[method-assign]
        h.api.edit_spec(state="closed")
        stop = asyncio.Event()
        daemon = asyncio.create_task(h.controller.run(h.body, stop.is_set, h.events.append))
        started = asyncio.get_running_loop().time()
        while asyncio.get_running_loop().time() - started < 0.8:
            h.controller.wake.set()  # a post arriving every 5 ms
            await asyncio.sleep(0.005)
        assert 3 <= len(failed) <= 8, f"{len(failed)} attempts in 0.8 s: not backing off"
        gaps = [b - a for a, b in itertools.pairwise(failed)]
        assert min(gaps[2:]) >= 0.19, gaps

        h.api.replace_status = up  # type: ignore[method-assign]
        await until(lambda: h.api.status.closed is True, "the close to finish")
        stop.set()
        await daemon

    run(test)
