"""structlog, configured once per process: JSON off a terminal, pretty on one."""

from __future__ import annotations

import logging
import sys

import structlog

__all__ = ["configure_logging", "get_logger"]

_configured = False


class _CurrentStderr:
    """Writes to whatever `sys.stderr` is at write time (a test runner may swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(*, level: str = "INFO", fmt: str = "auto") -> None:
    """Configure structlog and the stdlib root logger; later calls do nothing."""
    global _configured  # noqa: PLW0603 -- once-per-process switch
    if _configured:
        return
    _configured = True
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    numeric_level = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]  # a text stream by duck typing
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=numeric_level, stream=_CurrentStderr(), format="%(message)s")


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    """A logger bound to the module name."""
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(module=name)
    return logger
