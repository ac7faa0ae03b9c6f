"""Live progress on a terminal: each host's current step, redrawn in place below the progress lines.

Only when stdout is a terminal (and not for ``--json``, nor with ``TERM=dumb``): a pipe or a CI log gets the
whole progress lines `report.Progress` prints, never a cursor movement. The block holds one line per host busy
with a step (``web1  build    installing requirements  12 s``), from the ``{"progress": ...}`` lines the
host-side modules write as each step starts (`hostrun.step_listener`); a ticker redraws it every second, so a
long install or health check shows its time going. `Progress` erases the block, prints its line, and redraws it
(`around`). Step titles come from hosts: they pass through `terminal.for_terminal` and are cut to the width.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import TextIO

from .terminal import for_terminal

ERASE_UP = "\x1b[{}F\x1b[J"  # to the start of the line N lines up, then erase to the end of the screen
TICK = 1.0


def wanted(as_json: bool, out: TextIO | None = None) -> bool:
    """Whether to show live progress: stdout is a terminal, not ``--json``, and the terminal is not dumb."""
    stream = out or sys.__stdout__
    if as_json or stream is None or os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (OSError, ValueError):
        return False


class Live:
    """The block of live step lines, one per busy host."""

    def __init__(self, hosts: Sequence[str], out: TextIO | None = None) -> None:
        self.out = out or sys.__stdout__
        self.width = max((len(name) for name in hosts), default=4)
        self.steps: dict[str, tuple[str, str, float]] = {}  # host -> phase, step, since
        self.order = list(hosts)
        self.drawn = 0
        self.lock = threading.RLock()
        self.stopped = threading.Event()
        self.ticker = threading.Thread(target=self._tick, name="live-progress", daemon=True)
        self.ticker.start()

    def step(self, host: str, phase: str, title: str) -> None:
        """``host`` started step ``title`` of ``phase`` (`hostrun.StepListener`)."""
        with self.lock:
            self.steps[host] = (for_terminal(phase), for_terminal(title), time.monotonic())
            self._redraw()

    def around(self, write: Callable[[], None], host: str | None = None) -> None:
        """Erase the block, ``write`` (whole lines), forget ``host``'s step (its phase ended), draw the block."""
        with self.lock:
            self._erase()
            write()
            if host is not None:
                self.steps.pop(host, None)
            self._draw()

    def close(self) -> None:
        """Stop redrawing and erase the block (before the summary)."""
        self.stopped.set()
        with self.lock:
            self._erase()
            self.steps.clear()
            self._flush()

    def _tick(self) -> None:
        while not self.stopped.wait(TICK):
            with self.lock:
                if self.steps and not self.stopped.is_set():
                    self._redraw()

    def _redraw(self) -> None:
        self._erase()
        self._draw()

    def _erase(self) -> None:
        if self.drawn:
            self._write(ERASE_UP.format(self.drawn))
            self.drawn = 0

    def _draw(self) -> None:
        columns = max(20, shutil.get_terminal_size((80, 24)).columns - 1)
        now, lines = time.monotonic(), []
        for host in sorted(self.steps, key=lambda name: self.order.index(name) if name in self.order else 0):
            phase, title, since = self.steps[host]
            line = f"{host:<{self.width}}  {phase:<8}  ... {title}  {now - since:.0f} s"
            lines.append(line if len(line) <= columns else line[: columns - 1] + "…")
        if lines:
            self._write("".join(line + "\n" for line in lines))
        self.drawn = len(lines)
        self._flush()

    def _write(self, text: str) -> None:
        try:
            if self.out is not None:
                self.out.write(text)
        except (OSError, ValueError):
            self.stopped.set()

    def _flush(self) -> None:
        try:
            if self.out is not None:
                self.out.flush()
        except (OSError, ValueError):
            self.stopped.set()
