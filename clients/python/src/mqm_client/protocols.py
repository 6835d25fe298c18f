"""What ``guard`` takes and gives, as Protocols: its logger and the guarded function."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

__all__ = ["GuardLogger", "Guarded"]


class GuardLogger(Protocol):
    """What ``guard`` calls on its ``logger``: ``InferenceLogger`` is one; a stand-in needs
    only this ``log`` (its result is ignored). See ``guard`` for what each call carries.

    ``features`` is ``Any``: the call's first argument, whatever the model takes (a dict
    for ``InferenceLogger``), ``features_of``'s result, or None for a call without one.
    A guard given ``request_id=``, ``timestamp=`` or ``probabilities=`` also passes those
    keywords (as ``InferenceLogger.log`` takes them); a logger of one's own needs them only
    then.
    """

    def log(
        self,
        features: Any,
        prediction: Any,
        *,
        latency_ms: float | None,
        error: bool,
        error_message: str | None,
        fallback_reason: str | None,
    ) -> object: ...


if TYPE_CHECKING:  # mypy proves that InferenceLogger is a GuardLogger; nothing here runs
    from mqm_client.logger import InferenceLogger

    _INFERENCE_LOGGER: type[GuardLogger] = InferenceLogger


class Guarded(Protocol):
    """A guarded predict function: call it like the original."""

    # Copied from the original by functools.update_wrapper, with __doc__ and __qualname__.
    __name__: str
    __wrapped__: Callable[..., Any]

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

    def stats(self) -> dict[str, int | None]:
        """Calls per path (see ``guard``), plus no_default, log_failures, in_flight, and
        the shadow calls' counts."""
        ...

    def last_path(self) -> str | None:
        """The path of this function's last call in the current thread (or asyncio task)."""
        ...
