"""What a long command shows on the console: one line per step, with its time, and none of the
exporters' chatter.

- :func:`details` wraps a noisy call (ONNX export, quantization, checkpoint conversion). Python
  warnings, records of the libraries' loggers (``torch.onnx``,
  ``transformers``, ...) and whatever the call prints go to the details log of the running
  :func:`reporting` (``raner-backend setup``: ``CACHE_DIR/logs/setup.log``), or, outside one (the
  server, tests), to the ``raner_backend.details`` logger at DEBUG level. ``setup --verbose`` lets
  everything through, as before.
- :func:`step` marks a unit of work: inside :func:`reporting` it prints ``label ... 12.3 s`` when
  done, with a ticking timer on a terminal while it runs; elsewhere it does nothing.
"""
from __future__ import annotations

import contextlib
import io
import logging
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator

log = logging.getLogger("raner_backend.details")

# Loggers whose records are details: the exporters and the libraries they drive.
DETAIL_LOGGERS = ("torch", "onnx", "onnxruntime", "transformers", "huggingface_hub",
                  "safetensors")
LABEL_WIDTH = 44


@dataclass
class _Reporter:
    out: IO[str]
    details_path: Path | None
    verbose: bool
    tty: bool
    active: list = field(default_factory=list)  # [label, started] of running steps, innermost last
    lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _ticker: threading.Thread | None = None
    _shown: bool = False  # a ticking line is on screen

    def start(self, label: str) -> list:
        entry = [label, time.monotonic()]
        with self.lock:
            self.active.append(entry)
        if self.tty and self._ticker is None:
            self._ticker = threading.Thread(target=self._tick, name="raner-progress", daemon=True)
            self._ticker.start()
        return entry

    def finish(self, entry: list, note: str = "", failed: bool = False) -> None:
        seconds = time.monotonic() - entry[1]
        with self.lock:
            if entry in self.active:
                self.active.remove(entry)
            self._clear()
            status = "failed" if failed else f"{seconds:6.1f} s"
            self.out.write(f"  {entry[0]:<{LABEL_WIDTH}s} {status}{'  ' + note if note else ''}\n")
            self.out.flush()

    def _clear(self) -> None:
        if self._shown:
            self.out.write("\r\033[K")
            self._shown = False

    def _tick(self) -> None:
        frames = "|/-\\"
        n = 0
        while not self._stop.wait(0.25):
            with self.lock:
                if not self.active:
                    continue
                label, started = self.active[-1]
                self.out.write(f"\r\033[K{frames[n % 4]} {label:<{LABEL_WIDTH}s} {time.monotonic() - started:6.0f} s")
                self.out.flush()
                self._shown = True
            n += 1

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=1)
        with self.lock:
            self._clear()
            self.out.flush()


_reporter: _Reporter | None = None


@contextlib.contextmanager
def reporting(details_path: Path | None, verbose: bool = False, out: IO[str] | None = None) -> Iterator[_Reporter]:
    """Step lines on ``out`` (stdout); details into ``details_path`` (truncated first) unless ``verbose``.
    The ``raner_backend`` logger's INFO records go to the details file too (warnings stay on the console)."""
    global _reporter
    out = out or sys.stdout
    tty = bool(getattr(out, "isatty", lambda: False)())
    reporter = _Reporter(out, None if verbose else details_path, verbose, tty)
    own = logging.getLogger("raner_backend")
    saved = (own.handlers[:], own.propagate, own.level)
    if reporter.details_path is not None:
        reporter.details_path.parent.mkdir(parents=True, exist_ok=True)
        reporter.details_path.write_text("")
        to_file = logging.FileHandler(reporter.details_path, encoding="utf-8")
        to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        to_console = logging.StreamHandler(sys.stderr)
        to_console.setLevel(logging.WARNING)
        to_console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        own.handlers, own.propagate = [to_file, to_console], False
        if own.getEffectiveLevel() > logging.INFO:
            own.setLevel(logging.INFO)
    previous, _reporter = _reporter, reporter
    try:
        yield reporter
    finally:
        _reporter = previous
        reporter.close()
        if reporter.details_path is not None:
            for handler in own.handlers:
                handler.close()
            own.handlers, own.propagate = saved[0], saved[1]
            own.setLevel(saved[2])


class _Step:
    note = ""


@contextlib.contextmanager
def step(label: str) -> Iterator[_Step]:
    """One line on the console when done (inside :func:`reporting`); set ``.note`` to add a remark."""
    reporter = _reporter
    handle = _Step()
    if reporter is None:
        yield handle
        return
    entry = reporter.start(label)
    try:
        yield handle
    except BaseException:
        reporter.finish(entry, handle.note, failed=True)
        raise
    reporter.finish(entry, handle.note)


def _to_console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)


def _detail_loggers() -> list[logging.Logger]:
    """The top loggers of the noisy libraries, and every logger below them with a console handler
    of its own (torch gives many of its loggers a stderr handler and no propagation)."""
    names = {name for name in DETAIL_LOGGERS if not logging.getLogger(name).handlers}
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if (isinstance(logger, logging.Logger) and name.split(".")[0] in DETAIL_LOGGERS
                and any(_to_console(h) for h in logger.handlers)):
            names.add(name)
    return [logging.getLogger(name) for name in sorted(names)]


def _from_a_library(record: logging.LogRecord) -> bool:
    """Not one of this package's records: a library's logger (ONNX Runtime's transformer optimizer
    logs under bare module names such as ``fusion_base``) or the root logger's own (its quantizer
    calls ``logging.info``)."""
    return not record.name.startswith(__package__)


def _ours(record: logging.LogRecord) -> bool:
    return not _from_a_library(record)


@contextlib.contextmanager
def details(what: str) -> Iterator[None]:
    """Everything the wrapped call prints, warns or logs through the libraries' loggers goes to the
    details log (see the module docstring), not the console."""
    reporter = _reporter
    if reporter is not None and reporter.verbose:
        yield
        return
    to_file = reporter is not None and reporter.details_path is not None
    stream: IO[str] = open(reporter.details_path, "a", encoding="utf-8") if to_file else io.StringIO()
    stream.write(f"--- {what}\n")
    stream.flush()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    saved = [(lg, lg.handlers[:], lg.propagate) for lg in _detail_loggers()]
    for lg, handlers, _ in saved:  # console handlers swapped for the details handler; others kept
        lg.handlers, lg.propagate = [h for h in handlers if not _to_console(h)] + [handler], False
    # Records that reach the root logger from any other library go to the details, not the console.
    root = logging.getLogger()
    console = [h for h in root.handlers if _to_console(h)]
    handler.addFilter(_from_a_library)
    root.addHandler(handler)
    for h in console:
        h.addFilter(_ours)
    failed = False
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(stream), \
                contextlib.redirect_stderr(stream):
            warnings.simplefilter("default")
            try:
                yield
            finally:
                for w in caught:
                    stream.write(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line))
    except BaseException:
        failed = True
        raise
    finally:
        root.removeHandler(handler)
        for h in console:
            h.removeFilter(_ours)
        for lg, handlers, propagate in saved:
            lg.handlers, lg.propagate = handlers, propagate
        handler.flush()
        if to_file:
            stream.close()
            if failed:
                log.warning("%s failed; details in %s", what, reporter.details_path)
        else:
            text = stream.getvalue()
            if failed:
                log.warning("%s failed; its last output:\n%s", what, "\n".join(text.splitlines()[-40:]))
            elif log.isEnabledFor(logging.DEBUG):
                log.debug("%s", text)
