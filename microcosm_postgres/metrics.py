"""Store timing metrics, sent through microcosm-metrics when a `metrics` client is bound.

When `postgres_store_metrics.enabled` (default) and a `metrics` component exists that
is not pointed at "localhost", every public Store call records a histogram `store`
with its elapsed milliseconds and the tags

    source:microcosm-postgres  action:<create|retrieve|...>  model_name:<Model>  result:<SUCCESS|FAILURE>

Otherwise timing costs one attribute check per call. A call made by another timed
call of the same store (update retrieving first) is not recorded twice. Store
subclasses time their own public methods with the same decorator:

    @postgres_metric_timing(action="search_by_company")
    def search_by_company(self, company_id): ...

"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextvars import ContextVar
from enum import Enum
from functools import wraps
from typing import Any, TypeVar, cast

from microcosm.api import defaults, typed
from microcosm.errors import LockedGraphError, NotBoundError

__all__ = [
    "SQLExecutionStatus",
    "StoreMetrics",
    "configure_postgres_store_metrics",
    "postgres_metric_timing",
    "store_metrics_for",
]

F = TypeVar("F", bound=Callable[..., Any])

_timing: ContextVar[bool] = ContextVar("microcosm_postgres_timing", default=False)


class SQLExecutionStatus(Enum):
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"


class StoreMetrics:
    """Sends store timings to a statsd-style `client` (None: disabled)."""

    def __init__(self, client: Any = None) -> None:
        self.client = client

    @property
    def enabled(self) -> bool:
        return self.client is not None

    def record(self, action: str, model_name: str, status: SQLExecutionStatus, elapsed_ms: float) -> None:
        self.client.histogram(
            "store",
            elapsed_ms,
            tags=[
                "source:microcosm-postgres",
                f"action:{action}",
                f"model_name:{model_name}",
                f"result:{status.value}",
            ],
        )


@defaults(
    # Record store timings when a metrics client is bound and not pointed at localhost.
    enabled=typed(bool, default_value=True),
)
def configure_postgres_store_metrics(graph: Any) -> StoreMetrics:
    """The `postgres_store_metrics` component: enabled only when there is somewhere to send to."""
    if not graph.config.postgres_store_metrics.enabled:
        return StoreMetrics()
    try:
        graph.factory_for("metrics")
    except NotBoundError:
        return StoreMetrics()
    metrics_config = graph.config.get("metrics") or {}
    if metrics_config.get("host", "localhost") == "localhost":
        return StoreMetrics()
    return StoreMetrics(graph.metrics)


def store_metrics_for(graph: Any) -> StoreMetrics | None:
    """The graph's enabled store metrics, or None (also when the component cannot be made)."""
    try:
        metrics = graph.postgres_store_metrics
    except (NotBoundError, LockedGraphError):
        return None
    return metrics if metrics.enabled else None


def postgres_metric_timing(action: str | None = None) -> Callable[[F], F]:
    """Time a Store method (`action` defaults to its name); see the module docstring."""

    def decorate(func: F) -> F:
        name = action or func.__name__

        @wraps(func)
        def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
            metrics = self._metrics
            if metrics is None or _timing.get():
                return func(self, *args, **kwargs)
            token = _timing.set(True)
            status = SQLExecutionStatus.FAILURE
            started = time.perf_counter()
            try:
                result = func(self, *args, **kwargs)
                status = SQLExecutionStatus.SUCCESS
                return result
            finally:
                _timing.reset(token)
                metrics.record(name, self.model_name, status, (time.perf_counter() - started) * 1000)

        return cast(F, timed)

    return decorate
