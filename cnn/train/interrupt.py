"""Ctrl-C (SIGINT) and SIGTERM during a training run: stop without losing work.

The policy, while ``Interrupts`` is installed (``with Interrupts(say) as interrupts:``):

- inside a *graceful* phase (training steps), the first signal asks the run to stop after the
  current step (``requested``; the message says how long that step takes), and the caller saves
  a checkpoint at that step boundary; a second signal raises ``KeyboardInterrupt`` at once;
- anywhere else (data loading, validation, test) the first signal raises ``KeyboardInterrupt``;
- inside a ``critical()`` section (an optimizer step with its bookkeeping, a checkpoint write)
  a ``KeyboardInterrupt`` is held back until the section ends, so the state it guards is never
  half-updated.

Who catches the ``KeyboardInterrupt`` decides what is saved (see ``cnn.train.run``).
"""
import signal
import threading
from contextlib import contextmanager


class Interrupts:
    """SIGINT/SIGTERM handling with graceful phases and critical sections (see module doc)."""

    def __init__(self, say=print):
        self.say = say
        self.requested = False      # a graceful stop was asked for
        self.graceful = False       # inside a graceful phase
        self.pace = None            # callable -> how long the current step takes (text) or None
        self._critical = 0
        self._pending = False       # a KeyboardInterrupt held back by a critical section
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    @contextmanager
    def graceful_phase(self, pace=None):
        """Inside: the first signal only sets ``requested`` (stop after this step). pace: a
        callable giving the message how long the step takes ("a step takes about 12 s")."""
        self.graceful, self.pace = True, pace
        try:
            yield self
        finally:
            self.graceful, self.pace = False, None

    @contextmanager
    def critical(self):
        """Hold back a KeyboardInterrupt until the end of the block."""
        self._critical += 1
        try:
            yield
        finally:
            self._critical -= 1
            if self._critical == 0 and self._pending:
                self._pending = False
                raise KeyboardInterrupt

    def _handle(self, signum, frame):
        if self.graceful and not self.requested:
            self.requested = True
            pace = self.pace() if self.pace else None
            self.say(f"\nstopping after this step{'; ' + pace if pace else ''} (Ctrl-C again "
                     "to stop at once; the checkpoint then holds the last finished step)")
            return
        if self._critical:
            self._pending = True
            return
        raise KeyboardInterrupt
