"""Terminal progress: tickers publish counts, the printer draws them only on a terminal."""

from __future__ import annotations

import io
import logging
import re
import time
from pathlib import Path

from transforms.progress import ProgressPrinter, ProgressTicker, format_progress, read_progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_tickers_publish_counts_per_stage(tmp_path: Path) -> None:
    read_a, read_b = ProgressTicker(str(tmp_path), "read"), ProgressTicker(str(tmp_path), "read")
    classify = ProgressTicker(str(tmp_path), "classify")
    read_a.tick(3)
    for _ in range(1000):
        read_b.tick()
    classify.tick(64)
    # Rate-limited: after the first tick a ticker only writes every half second or on flush.
    assert read_progress(str(tmp_path))["read"] < 1003
    for t in (read_a, read_b, classify):
        t.flush()
    assert read_progress(str(tmp_path)) == {"read": 1003, "classify": 64}
    assert len(list(tmp_path.glob("*.count"))) == 3


def test_ticker_survives_a_removed_directory(tmp_path: Path) -> None:
    ticker = ProgressTicker(str(tmp_path / "gone"), "read")
    ticker.tick()
    ticker.flush()
    assert read_progress(str(tmp_path / "gone")) == {}


def test_format_progress() -> None:
    line = format_progress({"read": 16095, "classify": 9984}, 310.4, "classify", 65.2)
    assert line == "read 16,095 docs | classify 9,984 | 310 docs/s (classify) | 0:01:05"
    assert format_progress({}, 0.0, "read", 3700) == "read 0 docs | 0 docs/s (read) | 1:01:40"


def test_printer_redraws_one_line_on_a_terminal(tmp_path: Path) -> None:
    ticker = ProgressTicker(str(tmp_path), "read")
    ticker.tick(42)
    ticker.flush()
    terminal = _Terminal()
    with ProgressPrinter(str(tmp_path), terminal, interval=0.05) as printer:
        assert printer.enabled
        for _ in range(400):  # the first redraw comes after one interval; give a busy machine time
            if "read 42 docs" in terminal.getvalue():
                break
            time.sleep(0.05)
    out = terminal.getvalue()
    assert "\n" not in out, "progress redraws one line in place"
    assert re.search(r"\r\x1b\[2Kread 42 docs \| [\d,]+ docs/s \(read\) \| 0:00:\d\d", out)
    assert out.endswith("\r\x1b[2K"), "the line is cleared before the summary"


def test_log_lines_clear_the_progress_line_first(tmp_path: Path) -> None:
    terminal = _Terminal()
    handler = logging.StreamHandler(terminal)
    logging.getLogger().addHandler(handler)
    try:
        with ProgressPrinter(str(tmp_path), terminal, interval=60):
            logging.getLogger("tropemix.test").warning("a log line")
        logging.getLogger("tropemix.test").warning("after the run")
    finally:
        logging.getLogger().removeHandler(handler)
    assert terminal.getvalue() == "\r\x1b[2Ka log line\n\r\x1b[2Kafter the run\n"


def test_printer_is_silent_when_not_a_terminal_or_remote(tmp_path: Path) -> None:
    pipe = io.StringIO()
    with ProgressPrinter(str(tmp_path), pipe, interval=0.01) as printer:
        assert not printer.enabled
    assert pipe.getvalue() == ""
    terminal = _Terminal()
    with ProgressPrinter(str(tmp_path), terminal, interval=0.01, local=False) as printer:
        assert not printer.enabled
    assert terminal.getvalue() == ""
