"""The CLI's progress lines: redrawn on a terminal, plain lines elsewhere, rows, tokens/s, ETA."""

from __future__ import annotations

import io

from distillery import progress as progress_mod
from distillery.progress import Progress, status_line, vllm_bar


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_status_line_has_rows_rate_and_eta():
    line = status_line("generate", 120, 175, 4120, 10.0)
    assert line == "generate: 120/175 rows (68%), 412 tok/s, 0:10 elapsed, ETA 0:04"
    assert status_line("judge", 0, 40, 0, 0.0) == "judge: 0/40 rows (0%), 0:00 elapsed"
    assert "ETA 21:06:40" in status_line("generate", 10, 200, 0, 4000.0)  # hours when it takes hours
    assert "ETA" not in status_line("generate", 9, 200, 0, 4000.0)  # under 5% done, no guess yet


def test_plain_lines_off_a_terminal_every_interval_and_at_the_end():
    out, clock = io.StringIO(), Clock()
    p = Progress(out, tty=False, interval=15.0, clock=clock)
    p.begin("generate", 100, "completions")
    for _ in range(10):  # 10 updates over 20 s: one plain line per 15 s, not one per update
        clock.now += 2.0
        p.advance(10, 100)
    p.end()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()
    assert lines[0] == "generate: 0/100 completions (0%), 0:00 elapsed"
    assert lines[1] == "generate: 80/100 completions (80%), 50 tok/s, 0:16 elapsed, ETA 0:04"
    assert lines[-1] == "generate: 100 completions in 0:20, 50 tok/s"
    assert len(lines) == 3


def test_a_terminal_line_is_redrawn_in_place_and_cleared_for_log_lines():
    out, clock = io.StringIO(), Clock()
    p = Progress(out, tty=True, clock=clock)
    p.begin("judge", 4)
    clock.now += 1.0
    p.advance(1)
    p.clear_line()  # a log record is about to be printed
    assert out.getvalue().endswith("judge: 1/4 rows (25%), 0:01 elapsed, ETA 0:03\r\x1b[K")
    clock.now += 1.0
    p.advance(3)
    p.end()
    assert out.getvalue().endswith("\r\x1b[Kjudge: 4 rows in 0:02\n")
    p.clear_line()  # nothing half drawn now: nothing written
    assert out.getvalue().endswith("\n")


def test_engine_start_inside_generation_is_left_out_of_its_rate():
    out, clock = io.StringIO(), Clock()
    p = Progress(out, tty=False, clock=clock)
    p.begin("generate", 10, "completions")
    p.waiting("engine", "starting smollm2")
    clock.now += 70.0
    p.end("ready")
    clock.now += 5.0
    p.advance(10, 500)
    p.end()
    lines = out.getvalue().splitlines()
    assert "engine: starting smollm2, 0:00 elapsed" in lines
    assert "engine: ready in 1:10" in lines
    assert lines[-1] == "generate: 10 completions in 0:05, 100 tok/s"


def test_vllm_bar_follows_finished_requests_and_their_tokens():
    out, clock = io.StringIO(), Clock()
    assert vllm_bar() is False  # nothing installed (a Prefect worker): vLLM shows nothing either
    p = Progress(out, tty=False, clock=clock)
    progress_mod.install(p)
    try:
        factory = vllm_bar()
        assert factory(["a", "b"], desc="Rendering conversations") == ["a", "b"]  # passed through
        bar = factory(total=3, desc="Processed prompts", postfix="")  # no stage begun: the call is its own
        assert p.stage == "teacher"
        bar.postfix = f"est. speed input: 1.00 toks/s, output: {40 / bar.format_dict['elapsed']:.2f} toks/s"  # as vLLM writes it
        bar.update(2)
        assert p._stack[-1].done == 2 and abs(p._stack[-1].tokens - 40) <= 1
        bar.update(1)
        bar.close()
        assert p.stage is None
        assert out.getvalue().splitlines()[-1].startswith("teacher: 3 rows in 0:00")
    finally:
        progress_mod.install(None)
