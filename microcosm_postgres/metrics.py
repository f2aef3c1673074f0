"""Store timing metrics, sent through microcosm-metrics when a `metrics` client is bound.

Every public Store call reports through `store.postgres_store_metrics`, a callable

    postgres_store_metrics(model_name=..., action=..., elapsed_time=..., execution_result=...)

(the graph's `postgres_store_metrics` component, a `PostgresStoreMetrics`; a service or
a test can replace it on a store). A call made by another timed call (update retrieving
first) is reported too, each with its own action. When enabled (default) and a
`metrics` component exists that is not pointed at "localhost", each report is a
histogram `store` of the elapsed milliseconds with the tags

    source:microcosm-postgres  action:<create|retrieve|...>  model_name:<Model>  result:<SUCCESS|FAILURE>

Otherwise timing costs one attribute check per call. Store subclasses time their own
public methods with the same decorator:

    @postgres_metric_timing(action="search_by_company")
    def search_by_company(self, company_id): ...

"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import Enum
from functools import wraps
from typing import Any, TypeVar, cast

from microcosm.api import defaults, typed
from microcosm.errors import LockedGraphError, NotBoundError

__all__ = [
    "PostgresStoreMetrics",
    "SQLExecutionStatus",
    "StoreMetrics",
    "configure_postgres_store_metrics",
    "postgres_metric_timing",
    "store_metrics_for",
]

F = TypeVar("F", bound=Callable[..., Any])


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


class PostgresStoreMetrics:
    """The `postgres_store_metrics` component: the callable every timed store call reports to.

    `get_metrics(graph)` chooses the statsd-style client (override it in a subclass to
    send elsewhere); with no client, reporting is off and costs nothing.

    """

    def __init__(self, graph: Any) -> None:
        self.metrics = self.get_metrics(graph)
        self._store_metrics = StoreMetrics(self.metrics)

    def get_metrics(self, graph: Any) -> Any:
        """The metrics client to send to, or None: the graph's `metrics` component when
        `postgres_store_metrics.enabled` and it is not pointed at localhost."""
        if not graph.config.postgres_store_metrics.enabled:
            return None
        try:
            graph.factory_for("metrics")
        except NotBoundError:
            return None
        metrics_config = graph.config.get("metrics") or {}
        if metrics_config.get("host", "localhost") == "localhost":
            return None
        return graph.metrics

    @property
    def enabled(self) -> bool:
        return self.metrics is not None

    def __call__(
        self,
        *,
        model_name: str,
        action: str,
        elapsed_time: float,
        execution_result: SQLExecutionStatus,
    ) -> None:
        """Record one store call: `elapsed_time` in milliseconds."""
        if self.metrics is not None:
            self._store_metrics.record(action, model_name, execution_result, elapsed_time)


def _with_defaults(**values: Any) -> Callable[[F], F]:
    """microcosm's `defaults` (unannotated; it returns the function as it is), typed."""
    return cast(Callable[[F], F], defaults(**values))


@_with_defaults(
    # Record store timings when a metrics client is bound and not pointed at localhost.
    enabled=typed(bool, default_value=True),
)
def configure_postgres_store_metrics(graph: Any) -> PostgresStoreMetrics:
    """The `postgres_store_metrics` component (see `PostgresStoreMetrics`)."""
    return PostgresStoreMetrics(graph)


def store_metrics_for(graph: Any) -> Any:
    """The graph's `postgres_store_metrics` component, or None when it cannot be made."""
    try:
        return graph.postgres_store_metrics
    except (NotBoundError, LockedGraphError):
        return None


def postgres_metric_timing(action: str | None = None) -> Callable[[F], F]:
    """Time a Store method (`action` defaults to its name); see the module docstring."""

    def decorate(func: F) -> F:
        name = action or func.__name__

        @wraps(func)
        def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
            report = self.postgres_store_metrics
            if report is None or not getattr(report, "enabled", True):
                return func(self, *args, **kwargs)
            status = SQLExecutionStatus.FAILURE
            started = time.perf_counter()
            try:
                result = func(self, *args, **kwargs)
                status = SQLExecutionStatus.SUCCESS
                return result
            finally:
                report(
                    model_name=self.model_name,
                    action=name,
                    elapsed_time=(time.perf_counter() - started) * 1000,
                    execution_result=status,
                )

        return cast(F, timed)

    return decorate
