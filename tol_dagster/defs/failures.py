"""Failures in words: what an asset or a check raises for a known cause reaches the run view as
a `dg.Failure` with the cause first and what to do, its kind and exit code as metadata, and no
Python stack.

A bad slice key, a gate refusal, an unreachable Hub or a full disk is not a bug: a stack of
Dagster's frames and ours only hides the sentence that matters. Dagster serializes a step's
error from the raised exception's traceback, except for an error that carries exactly one
error already serialized (`DagsterUserCodeProcessError`, how it forwards errors between
processes): that one it shows as is. `FailureInWords` is both, so the step fails as a
`dg.Failure` (description and metadata in the UI) whose error is the message alone, named by
our error's class, which is how the command line still finds its exit code
(`exit_codes.classify_error_info`). An error we did not foresee (exit code 70) keeps its stack:
that is a bug to report.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

import dagster as dg
from dagster._core.errors import DagsterUserCodeProcessError
from dagster._utils.error import SerializableErrorInfo

from tol_dagster import errors, exit_codes

F = TypeVar("F", bound=Callable[..., Any])


class FailureInWords(DagsterUserCodeProcessError, dg.Failure):
    """A `dg.Failure` whose serialized error is one line of words, without a stack."""

    def __init__(self, error: errors.TolError) -> None:
        message = " ".join(str(error).split())
        details = {key: _metadata(value) for key, value in error.details().items()}
        info = SerializableErrorInfo(message=message, stack=[], cls_name=type(error).__name__)
        super().__init__(  # through DagsterUserCodeProcessError to dg.Failure(description, ...)
            message,
            user_code_process_error_infos=[info],
            metadata={
                "cause": type(error).__name__,
                "exit_code": error.exit_code,
                "meaning": exit_codes.VERDICTS.get(error.exit_code, ""),
                **details,
            },
            allow_retries=False,
        )


def known(exc: Exception) -> errors.TolError | None:
    """The error of ours `exc` stands for, unless it is a bug (those keep their stack)."""
    if isinstance(exc, dg.Failure):
        return None
    error = exit_codes.classify(exc)
    return None if isinstance(error, errors.InternalError) else error


def in_words(fn: F) -> F:
    """`fn` (an asset's or a check's body, plain or a generator) with its known failures
    raised as `FailureInWords`."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator(*args: Any, **kwargs: Any) -> Iterator[Any]:
            try:
                yield from fn(*args, **kwargs)
            except Exception as exc:
                _raise_in_words(exc)

        return generator  # type: ignore[return-value]

    @functools.wraps(fn)
    def plain(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            _raise_in_words(exc)

    return plain  # type: ignore[return-value]


def _raise_in_words(exc: Exception) -> NoReturn:
    """Called while `exc` is handled: raise it in words, or as it is (a bug keeps its stack)."""
    error = known(exc)
    if error is None:
        raise exc
    raise FailureInWords(error) from None


def _metadata(value: object) -> object:
    """A detail as a metadata value: scalars as they are, lists and mappings as JSON."""
    if isinstance(value, list | dict):
        return dg.MetadataValue.json(value)
    return value if isinstance(value, str | int | float | bool) else str(value)
