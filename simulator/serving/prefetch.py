"""Prefill costs computed ahead, in a second process, while the serving loop runs.

Under continuous batching most prefill iterations run one whole prompt, and a prompt length not seen before
is the most expensive iteration to cost (a probe of the model, see :mod:`.iteration`). The prompts are
known before the run starts, so a forked copy of the coster costs each distinct prompt length, in order of
arrival, on the other CPU, and the loop takes each cost when it needs it instead of computing it. An
iteration's cost is a pure function of its batch, so a cost taken is the one the loop would have computed:
outputs are byte-identical with and without prefetching, and the loop counts a taken cost the way it was
costed and adds the notes its passes raised, as if it had costed it itself. Each prefill is costed once:
the copy says which one it is costing; the loop waits for that one when it needs it, costing the next
ones the copy has not started meanwhile (and telling the copy to skip them), and costs one the copy has
not reached yet itself, telling the copy to skip it.

Prefetching runs only where it can pay and cannot crowd out other work: at least :data:`MIN_PROMPTS`
distinct prompt lengths, two CPUs this process may use, and a process that is not itself a worker of
another (a sweep's pool or Dask worker: those already use every CPU). The copy ends with the run, however
the run ends.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from workloads.mixed import MixedBatch, Sequence

if TYPE_CHECKING:
    from simulator.serving.iteration import IterationCoster
    from simulator.serving.parts import Sums

MIN_PROMPTS = 64  # distinct prompt lengths below which forking a copy costs more than it saves
Fetched = tuple[str, "Sums", tuple[str, ...]]  # how it was costed ("probed" or "whole"), its sums, its notes


class Prefetch:
    """A forked copy of a coster costing ``batches`` in turn (see the module docstring)."""

    def __init__(self, coster: IterationCoster, batches: list[MixedBatch]) -> None:
        self.coster, self.batches = coster, batches
        self.place = {batch.key: index for index, batch in enumerate(batches)}
        self.ready: dict[Any, Fetched] = {}
        self.pending = {batch.key for batch in batches}
        self.costing: Any = None  # the batch the copy is costing now (its key)
        context = multiprocessing.get_context("fork")
        self.connection, theirs = context.Pipe()
        for stream in (sys.stdout, sys.stderr):  # the copy must not write the loop's buffered output again
            stream.flush()
        self.process = context.Process(target=_cost_ahead, args=(coster, batches, theirs, self.connection),
                                       daemon=True)
        self.process.start()
        theirs.close()

    def take(self, batch: MixedBatch) -> Fetched | None:
        """``batch``'s cost when the copy has sent it, or once it does when it is costing it now (costing the
        next batches the copy has not started meanwhile); None (and the copy told to skip it) otherwise."""
        key = batch.key
        if key not in self.pending:
            return None
        self.pending.discard(key)
        self._receive(block=False)
        while key == self.costing and key not in self.ready:
            ahead = self._unstarted_after(key)
            if ahead is None:
                self._receive(block=True, until=key)
                break
            self._cost_here(ahead)
            self._receive(block=False)
        fetched = self.ready.pop(key, None)
        if fetched is None:
            self._skip(key)
        return fetched

    def _unstarted_after(self, key: Any) -> MixedBatch | None:
        """The first batch after ``key`` that neither the copy nor the loop has costed or started."""
        for batch in self.batches[self.place[key] + 1:]:
            if batch.key in self.pending and batch.key not in self.ready and batch.key != self.costing:
                return batch
        return None

    def _cost_here(self, batch: MixedBatch) -> None:
        """Cost ``batch`` in the loop's process, kept as the copy's costs are: its notes apart, added when the
        loop takes it (as they would be had it costed it then). A batch that fails is left to the loop, which
        may never run it (a rejected request's prompt) and raises what there is to raise if it does."""
        self._skip(batch.key)
        notes = self.coster.sim.notes
        known = len(notes)
        try:
            way, sums = self.coster.costed_alone(batch, None)
        except Exception:  # see the docstring
            return
        finally:
            fresh = tuple(notes[known:])
            del notes[known:]
        self.ready[batch.key] = (way, sums, fresh)

    def _skip(self, key: Any) -> None:
        with suppress(OSError):  # the copy has finished (or failed): nothing to skip
            self.connection.send(key)

    def _receive(self, block: bool, until: Any = None) -> None:
        """What the copy has sent: a batch it starts costing (``costing``) and costs it has finished; with
        ``block``, until the cost of ``until`` is in."""
        try:
            while (block and until not in self.ready) or self.connection.poll():
                message = self.connection.recv()
                if len(message) == 1:
                    self.costing = message[0]
                else:
                    key, *fetched = message
                    self.ready[key] = tuple(fetched)
        except (EOFError, OSError):  # the copy has finished (or failed): the loop costs the rest
            self.costing = None

    def close(self) -> None:
        self.process.terminate()
        self.process.join()
        self.connection.close()


def _cost_ahead(coster: IterationCoster, batches: list[MixedBatch], connection: Connection,
                loops: Connection) -> None:
    """The copy: cost each batch not skipped and send it with the notes its passes raise. Any failure ends
    it quietly: the loop then costs the batch itself, and raises what there is to raise. It ends too when
    the loop's process has ended (killed before it could terminate the copy): its end of the pipe (``loops``,
    inherited by the fork) is closed here, so that sending to a loop that is gone fails."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # an interrupted run terminates the copy itself
    loops.close()
    parent = os.getppid()
    skipped: set[Any] = set()
    try:
        for batch in batches:
            if os.getppid() != parent:
                break
            while connection.poll():
                skipped.add(connection.recv())
            if batch.key in skipped:
                continue
            connection.send((batch.key,))  # costing it now: the loop waits for it rather than cost it too
            coster.sim.notes.clear()  # the notes of this batch's passes alone
            way, sums = coster.costed_alone(batch, None)
            connection.send((batch.key, way, sums, tuple(coster.sim.notes)))
    except BaseException:  # see the docstring
        pass
    finally:
        connection.close()


def prompt_batches(coster: IterationCoster, prompts: list[int], imbalance: float | None) -> list[MixedBatch]:
    """The prefills of one whole prompt of each distinct length in ``prompts`` (in order), bar those the coster
    has costed."""
    batches = (MixedBatch((Sequence(length, 0, True),), imbalance) for length in dict.fromkeys(prompts))
    return [batch for batch in batches if batch.key not in coster.memo]


@contextmanager
def prefetched(coster: IterationCoster, prompts: list[int], imbalance: float | None) -> Iterator[None]:
    """Prefetch the prefills of ``prompts`` (in arrival order) for ``coster`` while the block runs, where it
    can pay (see the module docstring)."""
    batches = prompt_batches(coster, prompts, imbalance)
    if (len(batches) < MIN_PROMPTS or len(os.sched_getaffinity(0)) < 2
            or multiprocessing.parent_process() is not None or coster.prefetch is not None):
        yield
        return
    coster.prefetch = Prefetch(coster, batches)
    try:
        yield
    finally:
        coster.prefetch.close()
        coster.prefetch = None
