"""Progress of the long stages (engine start, generation, judging) for the CLI.

On a terminal one line is redrawn in place; elsewhere (a log file, CI) a plain
line is printed every `interval` seconds and when the stage ends. Nothing is
shown unless a program installs a `Progress` (the `distillery` CLI does): under
a Prefect worker the run's logs and progress artifact say the same.

The engine reports through `vllm_bar()`, a stand-in for the tqdm bar that
vLLM's `LLM.chat(use_tqdm=...)` accepts, so progress moves as each request
finishes, not once per batch. Pure logic: no vLLM or Prefect import.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


def status_line(stage: str, done: int, total: int | None, tokens: int, elapsed: float, unit: str = "rows") -> str:
    """`generate: 120/175 rows (69%), 412 tok/s, 0:29 elapsed, ETA 0:13`."""
    parts = [f"{stage}: {done}/{total} {unit} ({100 * done // max(total, 1)}%)" if total else f"{stage}: {done} {unit}"]
    if tokens and elapsed > 0:
        parts.append(f"{tokens / elapsed:.0f} tok/s")
    parts.append(f"{_clock(elapsed)} elapsed")
    if total and 0 < done < total and elapsed > 0 and done * 20 >= total:  # before 5%, requests finish in waves: no fair guess
        parts.append(f"ETA {_clock((total - done) * elapsed / done)}")
    return ", ".join(parts)


@dataclass
class _Stage:
    name: str
    total: int | None
    unit: str
    started: float
    done: int = 0
    tokens: int = 0


class Progress:
    """Stages nest (engine start inside generation): `begin`, `advance`/`reach`, `end`."""

    def __init__(self, stream: TextIO, tty: bool, interval: float = 15.0, clock: Callable[[], float] = time.monotonic):
        self.stream, self.tty, self.clock = stream, tty, clock
        self.interval = 0.5 if tty else interval
        self._stack: list[_Stage] = []
        self._lock = threading.RLock()
        self._ticker: threading.Event | None = None
        self.last = 0.0
        self._drawn = False

    @property
    def stage(self) -> str | None:
        return self._stack[-1].name if self._stack else None

    def begin(self, stage: str, total: int | None = None, unit: str = "rows") -> None:
        with self._lock:
            if self._stack and self.tty:
                self._write(self._line(self._stack[-1]), final=True)  # keep the outer stage's last state on screen
            self._stack.append(_Stage(stage, total, unit, self.clock()))
            self._emit(force=True)

    def advance(self, rows: int = 0, tokens: int = 0) -> None:
        with self._lock:
            if self._stack:
                self._stack[-1].done += rows
                self._stack[-1].tokens += tokens
                self._emit()

    def reach(self, done: int) -> None:
        """At least `done` rows are finished (e.g. a batch replayed from the cache)."""
        with self._lock:
            if self._stack and done > self._stack[-1].done:
                self._stack[-1].done = done
                self._emit()

    def end(self, note: str = "") -> None:
        with self._lock:
            if not self._stack:
                return
            self._stop_ticker()
            s = self._stack.pop()
            elapsed = self.clock() - s.started
            if s.total is None and s.done == 0:  # a waiting stage
                line = f"{s.name}: {note or 'done'} in {_clock(elapsed)}"
            else:
                line = f"{s.name}: {s.done} {s.unit} in {_clock(elapsed)}"
                if s.tokens and elapsed > 0:
                    line += f", {s.tokens / elapsed:.0f} tok/s"
                line += f" ({note})" if note else ""
            self._write(line, final=True)
            if self._stack:  # the outer stage's rate and ETA leave out the time spent in this one
                self._stack[-1].started += elapsed
                self._emit(force=True)

    def waiting(self, stage: str, what: str) -> None:
        """A stage with no count (engine start): elapsed time, redrawn each second on a terminal."""
        self.begin(stage, None, what)
        if self.tty:
            stop = self._ticker = threading.Event()

            def tick() -> None:
                while not stop.wait(1.0):
                    self.advance()

            threading.Thread(target=tick, name="distillery-progress", daemon=True).start()

    def _line(self, s: _Stage) -> str:
        elapsed = self.clock() - s.started
        if s.total is None and s.done == 0:
            return f"{s.name}: {s.unit}, {_clock(elapsed)} elapsed"
        return status_line(s.name, s.done, s.total, s.tokens, elapsed, s.unit)

    def _emit(self, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self.last < self.interval:
            return
        self.last = now
        self._write(self._line(self._stack[-1]))

    def clear_line(self) -> None:
        """Before another line is printed (a log record): wipe the half-drawn progress line."""
        if self.tty and self._drawn:
            self._drawn = False
            try:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
            except (OSError, ValueError):
                pass

    def _write(self, line: str, final: bool = False) -> None:
        try:
            if self.tty:
                self._drawn = not final
                self.stream.write("\r\x1b[K" + line + ("\n" if final else ""))
            else:
                self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed terminal or pipe: progress is not worth failing over
            pass

    def _stop_ticker(self) -> None:
        if self._ticker is not None:
            self._ticker.set()
            self._ticker = None


_current: Progress | None = None


def install(progress: Progress | None) -> None:
    global _current
    _current = progress


def current() -> Progress | None:
    return _current


_SPEED = re.compile(r"output: ([0-9.]+) toks/s")


class _VllmBar:
    """What vLLM's offline loop uses of a tqdm bar: n, update, postfix, format_dict, refresh, close."""

    def __init__(self, progress: Progress, total: int, own_stage: bool):
        self.progress, self.total, self.own_stage = progress, total, own_stage
        self.n, self.tokens = 0, 0
        self.started = time.monotonic()
        self._elapsed = 1e-6
        self.postfix = ""

    @property
    def format_dict(self) -> dict:
        # vLLM divides its token count by this, then calls update(): the same value multiplies back.
        self._elapsed = max(time.monotonic() - self.started, 1e-6)
        return {"elapsed": self._elapsed, "n": self.n, "total": self.total}

    def update(self, n: int = 1) -> None:
        self.n += n
        tokens = 0
        speed = _SPEED.search(self.postfix or "")
        if speed:  # vLLM reports the call's output tokens as a rate since the call began
            total_tokens = round(float(speed.group(1)) * self._elapsed)
            tokens, self.tokens = max(0, total_tokens - self.tokens), max(self.tokens, total_tokens)
        self.progress.advance(n, tokens)

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        if self.own_stage:
            self.progress.end()


def vllm_bar(default_stage: str = "teacher") -> Callable | bool:
    """`use_tqdm` for vLLM's LLM.chat/generate: False when no progress is shown.

    Inside a stage begun by the caller, finished requests advance it; otherwise
    each engine call is a stage of its own, named `default_stage`.
    """
    progress = _current
    if progress is None:
        return False

    def factory(iterable=None, total: int | None = None, **_ignored):
        if iterable is not None:  # vLLM also wraps prompt rendering: fast, not shown
            return iterable
        own = progress.stage is None
        if own:
            progress.begin(default_stage, total)
        return _VllmBar(progress, total or 0, own)

    return factory
