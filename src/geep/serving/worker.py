"""The model worker: ONE thread that owns the model, the schedulers and the executors, and steps rows through them.

A request becomes a :class:`Job`: its texts, the policy and knob it runs under, its arrival on the server's clock
and a callback. The worker tokenises the job's texts exactly as offline prediction does and adds its rows to the
scheduler of its lane (one lane per policy and knob: a policy decides for a whole batch at one knob; with the
defaults every request is in one lane). Then it steps: the lane's ``Scheduler.schedule(now)`` plans a step (the
strategy may wait for a fuller batch, until ``Scheduler.ready_at()``), ``Executor.run_step`` runs it on the
backend, and rows that leave are answered at once; a job is answered when its last row has left. Rows of
cancelled jobs (timed out, client gone) leave the pools (``Scheduler.drop`` + ``Executor.release``). An exception
inside a step fails the jobs with rows in that step (500) and nothing else.

The event loop never touches the model: it calls :meth:`Worker.submit`, :meth:`Worker.cancel` and
:meth:`Worker.flush`, and the job's callback runs on the worker thread.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from geep.inference.executor import Executor, Finished
from geep.inference.offline import make_scheduler
from geep.data.token_data import TokenData, Windows, make_windows, sentence_words
from geep.inference.rows import answers, build_rows, prepare, sentence_answers
from geep.inference.spec import RunSpec
from geep.modeling.cascade import Cascade
from geep.modeling.model import MultiExitClassifier
from geep.runtime.base import Backend
from geep.scheduling import LayerPools, Scheduler, Shrinking, Step
from geep.scheduling.strategies import oldest_arrival
from geep.serving.metrics import Metrics
from geep.serving.settings import ServeSettings

logger = logging.getLogger(__name__)

IDLE_WAIT_S = 1.0  # the longest the worker sleeps without a message (it wakes at once on one)
WARM_UP_TEXTS = ["warm up", "a slightly longer text to warm up the model on a second length"]


@dataclass
class RowResult:
    """One row's answer, as the model's task writes it (``Task.written``): a label name, a list of label names or a
    score; every class's (label's) probability (C,; none for regression) and the exit it left at."""

    prediction: Any
    probabilities: list[float]
    exit_layer: int
    exit_member: int | None = None  # a cascade's: the member (1..M) the row left in


@dataclass
class Outcome:
    """A job's answer: status 200 with one result per text in input order, or an error status and one line."""

    status: int
    predictions: list[RowResult] | None = None
    error: str | None = None


_job_ids = itertools.count()


@dataclass(eq=False)
class Job:
    """A request's texts and how to run them; ``done(outcome)`` is called once, on the worker thread (never for a
    cancelled job)."""

    texts: list[str]
    pairs: list[str] | None
    spec: RunSpec  # the run the request was resolved to (``geep.serving.app.resolve_request``)
    arrival: float
    done: Callable[[Outcome], None]
    id: int = field(default_factory=lambda: next(_job_ids))
    lane: "Lane | None" = None
    row_ids: list[int] = field(default_factory=list)
    results: list[RowResult | None] = field(default_factory=list)
    remaining: int = 0
    windows: Windows | None = None  # a token classifier's: the rows each text was cut into


@dataclass(eq=False)
class Lane:
    """The scheduler and executor of one run (policy and knob), and how many jobs it holds."""

    key: tuple
    scheduler: Scheduler
    executor: Executor
    jobs: int = 0

    def oldest(self) -> float:
        return min(map(oldest_arrival, self.scheduler.nonempty_pools()), default=math.inf)


class Worker:
    """Steps every request's rows on ``backend`` (see the module docstring). ``clock``: seconds, the clock the
    requests' arrivals are read on (monotonic by default; tests may pass their own)."""

    def __init__(self, model: MultiExitClassifier | Cascade, backend: Backend, settings: ServeSettings, spec: RunSpec, *,
                 metrics: Metrics | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.model, self.backend, self.settings = model, backend, settings
        self.spec = spec  # the default run, whose lane is warmed up before the worker is ready
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.ready = threading.Event()
        self.error: BaseException | None = None  # what stopped the worker thread, if anything did
        self._cond = threading.Condition()
        self._inbox: list[tuple[str, Any]] = []
        self._inflight = 0  # rows admitted and not yet answered or dropped (guarded by _cond)
        self._stopping = False
        self._flush = False  # stop waiting for fuller batches (shutdown)
        self._thread: threading.Thread | None = None
        # Owned by the worker thread alone:
        self._jobs: dict[int, Job] = {}
        self._rows: dict[int, tuple[Job, int]] = {}  # row id -> (its job, its index in the job)
        self._lanes: dict[tuple, Lane] = {}
        self._row_ids = itertools.count()
        self._recording = True

    # ----------------------------------------------------------------------------- called from other threads
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="geep-model-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Finishes the jobs in flight (without waiting for fuller batches), then ends the thread."""
        with self._cond:
            self._stopping = self._flush = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def flush(self) -> None:
        """From now on no step waits for a fuller batch (a server that is shutting down)."""
        with self._cond:
            self._flush = True
            self._inbox.append(("flush", None))
            self._cond.notify()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    @property
    def inflight(self) -> int:
        return self._inflight

    def submit(self, job: Job) -> bool:
        """Queues ``job``; False (nothing queued) when its rows would put more than ``max_queue`` rows in flight."""
        n = len(job.texts)
        with self._cond:
            if self._inflight + n > self.settings.max_queue:
                return False
            self._inflight += n
            self.metrics.queue.set(self._inflight)
            self._inbox.append(("job", job))
            self._cond.notify()
        return True

    def cancel(self, job_id: int, reason: str) -> None:
        """Drops a job's rows that have not left yet (``reason``: timeout, disconnected); its callback is not called."""
        with self._cond:
            self._inbox.append(("cancel", (job_id, reason)))
            self._cond.notify()

    # ------------------------------------------------------------------------------------- the worker thread
    def _run(self) -> None:
        try:
            with torch.inference_mode():
                self._warm_up()
                self.ready.set()
                while self._next():
                    pass
        except BaseException as e:  # noqa: BLE001 - the thread must not die silently; every job gets its 500
            self.error = e
            logger.exception("the model worker stopped")
            self.ready.clear()
            for job in list(self._jobs.values()):
                self._end(job, Outcome(500, error=f"the model worker stopped: {_one_line(e)}"), "failed")
        finally:
            self.ready.clear()

    def _warm_up(self) -> None:
        """Runs a few rows through the default lane, so the first request does not pay for first calls."""
        outcomes: list[Outcome] = []
        job = Job(list(WARM_UP_TEXTS), None, self.spec, self.clock(), outcomes.append)
        self._recording = False
        with self._cond:
            self._inflight += len(job.texts)
        self._admit(job)
        while not outcomes and self._step(math.inf):
            pass
        self._recording = True
        if not outcomes or outcomes[0].status != 200:
            raise RuntimeError(f"warm-up failed: {outcomes[0].error if outcomes else 'no answer'}")

    def _next(self) -> bool:
        """Handles the messages, then runs one step or sleeps until a pool is ready or a message comes; False
        once stopped with no job left."""
        with self._cond:
            messages, self._inbox = self._inbox, []
        for kind, payload in messages:
            if kind == "job":
                self._admit(payload)
            elif kind == "cancel":
                job = self._jobs.get(payload[0])
                if job is not None:
                    self._end(job, None, payload[1])
        if self._flush:
            for lane in self._lanes.values():
                lane.scheduler.strategy.max_wait = 0.0
        if self._stopping and not self._jobs:
            return False
        if self._step(self.clock()):
            return True
        wake = min((t for lane in self._lanes.values() if (t := lane.scheduler.ready_at()) is not None),
                   default=None)
        with self._cond:
            if self._inbox or (self._stopping and not self._jobs):
                return True
            timeout = IDLE_WAIT_S if wake is None else min(IDLE_WAIT_S, max(wake - self.clock(), 0.0))
            self._cond.wait(timeout)
        return True

    def _lane(self, spec: RunSpec) -> Lane:
        key = (spec.policy.name, spec.knob)
        lane = self._lanes.get(key)
        if lane is None:
            s = self.settings
            max_wait = 0.0 if self._flush else s.max_wait_ms / 1000.0
            strategy = (LayerPools(max_wait, s.pool_order) if s.batching == "layer" else Shrinking(max_wait))
            scheduler = make_scheduler(self.backend, spec, strategy)
            lane = self._lanes[key] = Lane(key, scheduler, Executor(scheduler, self.backend, spec.policy, spec.knob))
        return lane

    def _admit(self, job: Job) -> None:
        """Prepares the job's rows as offline prediction does (``geep.inference.rows``: tokenised, truncated, exit
        layers predicted) and adds them to its lane at layer 0."""
        lane = job.lane = self._lane(job.spec)
        lane.jobs += 1
        self._jobs[job.id] = job
        token = not isinstance(self.model, Cascade) and self.model.config.task == "token-classification"
        try:
            if token:  # each text's words cut into windows, as geep predict cuts them (geep.data.token_data)
                empty = next((i for i, t in enumerate(job.texts) if not sentence_words(t)), None)
                if empty is not None:
                    self._end(job, Outcome(422, error=f"text {empty} is an empty sentence (no words)"), "failed")
                    return
                job.windows = make_windows(self.model.tokenizer,
                                           TokenData([sentence_words(t) for t in job.texts], None, "request"),
                                           self.model.max_length)
                prepared = prepare(self.model, job.spec, job.windows.texts)
            else:
                prepared = prepare(self.model, job.spec, job.texts, job.pairs)
        except Exception as e:  # noqa: BLE001 - the request fails, the server goes on
            logger.exception("tokenising a request failed")
            self._end(job, Outcome(500, error=f"could not prepare the texts: {_one_line(e)}"), "failed")
            return
        rids = [next(self._row_ids) for _ in range(len(prepared))]
        rows = build_rows(prepared, range(len(prepared)), ids=rids, keys=rids, arrival=job.arrival)
        for i, rid in enumerate(rids):
            self._rows[rid] = (job, i)
        job.row_ids = rids
        job.results = [None] * len(rows)
        job.remaining = len(rows)
        lane.scheduler.add(rows)

    def _step(self, now: float) -> bool:
        """Plans and runs one step of the lane whose oldest row arrived first; False when no pool is ready."""
        lanes = [lane for lane in self._lanes.values() if len(lane.scheduler)]
        if len(lanes) > 1:
            lanes.sort(key=Lane.oldest)
        for lane in lanes:
            step = lane.scheduler.schedule(now)
            if step is not None:
                self._run_step(lane, step)
                return True
        return False

    def _run_step(self, lane: Lane, step: Step) -> None:
        try:
            finished = lane.executor.run_step(step)
        except Exception as e:  # noqa: BLE001 - only this step's requests fail
            logger.exception("a step of %d rows (layers %d..%d) failed", step.size, step.start + 1, step.end)
            failed = {id(job): job for job, _ in (self._rows[r.id] for r in step.rows if r.id in self._rows)}
            for job in failed.values():
                self._end(job, Outcome(500, error=f"the model failed on a step with this request's rows: "
                                                  f"{_one_line(e)}"), "failed")
            return
        if self._recording:
            self.metrics.step(step.end, step.size)
        if finished.rows:
            self._answer(finished)

    def _answer(self, finished: Finished) -> None:
        task = self.model.task
        answer = answers(task, finished.logits)  # as offline prediction answers
        probabilities = answer.probabilities.cpu()
        written = task.written(answer.predictions.cpu(), probabilities)
        if self._recording:
            self.metrics.exits(finished.layer, len(finished.rows))
        member = None
        if isinstance(self.model, Cascade):
            member = self.model.member_of(finished.layer) + 1
        for row, label, probs in zip(finished.rows, written, probabilities.tolist()):
            owner = self._rows.pop(row.id, None)
            if owner is None:
                continue
            job, index = owner
            job.results[index] = RowResult(label, probs, finished.layer, member)
            job.remaining -= 1
            if job.remaining == 0:
                self._end(job, Outcome(200, job.results if job.windows is None else self._sentences(job)), "ok")

    def _sentences(self, job: Job) -> list[RowResult]:
        """A token job's answer per text from its windows' (``rows.sentence_answers``, as geep predict writes it)."""
        task, windows = self.model.task, job.windows
        index = {name: i for i, name in enumerate(task.label_names)}
        ids = torch.tensor([[-1 if t is None else index[t] for t in r.prediction] for r in job.results])
        layers = torch.tensor([r.exit_layer for r in job.results])
        sentences = [sentence_words(t) for t in job.texts]
        answered = sentence_answers(task, windows, sentences, ids, layers)
        return [RowResult(a, [], a["exit_layer"]) for a in answered]

    def _end(self, job: Job, outcome: Outcome | None, status: str) -> None:
        """Finishes a job: its rows still waiting leave the pools, its rows stop counting as in flight, and its
        callback gets ``outcome`` (None: a cancelled job, nobody to answer)."""
        if self._jobs.pop(job.id, None) is None:
            return
        left = [rid for rid in job.row_ids if self._rows.pop(rid, None) is not None]
        lane = job.lane
        if left:
            lane.executor.release(lane.scheduler.drop(left))
        lane.jobs -= 1
        if lane.jobs == 0:
            del self._lanes[lane.key]
        with self._cond:
            self._inflight -= len(job.texts)
            self.metrics.queue.set(self._inflight)
        if self._recording:
            self.metrics.rows.labels(status=status).inc(len(job.texts))
        if outcome is not None:
            try:
                job.done(outcome)
            except Exception:  # noqa: BLE001 - a callback's failure is the caller's, not the worker's
                logger.exception("answering a request failed")


def _one_line(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())
