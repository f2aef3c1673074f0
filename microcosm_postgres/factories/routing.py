"""Engine routing: which engine (or connection) a session statement goes to.

Sessions made by the `sessionmaker` component ask a router for their bind instead of
holding one engine. The router is the component named by
`sessionmaker.engine_routing_strategy` (3.x's names):

    default_engine_routing_strategy   every statement goes to the `postgres` engine
    model_engine_routing_strategy     a model class with `__engine__ = "secret"` goes to an
                                      engine built from `secret.postgres.*` (the same keys and
                                      naming conventions as `postgres.*`); the rest to `postgres`

Read replicas (`postgres.replicas`, or `<name>.postgres.replicas`): a SELECT goes to a
replica while the session's transaction has not written through that engine; writes,
and every statement after a write until the transaction ends, go to the primary
("read your writes"). One replica serves a transaction from its first read to its end;
transactions take the replicas in turn. A replica that does not answer is skipped for
`_REPLICA_RETRY_SECONDS` (reads fall back to the primary): the first attempt costs at
most `connect_timeout`, as replica engines do not retry. A read-only session
(`read_only=True`, e.g. `SessionContext(graph, read_only=True)`) sends everything to a
replica (the primary when none answers). Replicas lag: a transaction that must see a
write committed just before belongs on the primary (write in it, or use a normal session).

A transaction that writes through two engines could not commit atomically, so it is
refused with `CrossEngineTransactionError` before anything reaches the second engine,
unless the caller opts in: `allow_cross_engine_writes(session)`, or
`sessionmaker.allow_cross_engine_writes = true` for every session.

"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from microcosm.errors import NotBoundError, ValidationError
from microcosm.metadata import Metadata
from sqlalchemy import Table
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.engine import make_url as parse_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Mapper, Session
from sqlalchemy.sql.elements import ClauseElement

from microcosm_postgres.errors import CrossEngineTransactionError, PersistenceError
from microcosm_postgres.factories.engine import make_engine, postgres_section

if TYPE_CHECKING:
    from sqlalchemy import MetaData

    from microcosm_postgres.graph import Graph

__all__ = [
    "ALLOW_CROSS_ENGINE_WRITES",
    "DefaultRouter",
    "EngineRouter",
    "ModelRouter",
    "READ_ONLY",
    "Replicas",
    "allow_cross_engine_writes",
    "configure_default_engine_routing_strategy",
    "configure_model_engine_routing_strategy",
    "engine_name_of",
    "forget_replicas",
    "forget_writes",
    "make_replicas",
    "replica_bind",
    "note_write",
    "router_for",
    "tables_by_engine",
    "written_engines",
]

logger = logging.getLogger(__name__)

#: `session.info` key: True lets the session's transactions write through several engines.
ALLOW_CROSS_ENGINE_WRITES = "microcosm_postgres.allow_cross_engine_writes"
#: `session.info` key: True sends all of the session's statements to a replica.
READ_ONLY = "microcosm_postgres.read_only"
# `session.info` key: the engines the current transaction has written through.
_WRITTEN = "microcosm_postgres.written_engines"
# `session.info` key: the replica serving each primary in the current transaction.
_CHOSEN = "microcosm_postgres.chosen_replicas"
# Seconds a replica that did not answer is left out before it is tried again.
_REPLICA_RETRY_SECONDS = 5.0

# The engine name meaning "the service's `postgres` engine".
_DEFAULT_ENGINE = "postgres"


class EngineRouter(Protocol):
    """Chooses the bind for one statement of a session."""

    def get_bind(
        self, mapper: Mapper[Any] | type[Any] | None = None, clause: ClauseElement | None = None
    ) -> Engine | Connection:
        """Return the engine or connection for a statement about `mapper` / `clause`."""
        ...

    def engine_for_table(self, table: Table) -> Engine:
        """The engine holding `table` (for create_all, drop_all and recreate_all)."""
        ...


def engine_name_of(model: Mapper[Any] | type[Any] | None) -> str | None:
    """The `__engine__` a model class (or its mapper) names; None for the default engine."""
    cls = model.class_ if isinstance(model, Mapper) else model
    name = getattr(cls, "__engine__", None) if cls is not None else None
    return None if name in (None, _DEFAULT_ENGINE) else str(name)


class DefaultRouter:
    """Routes every statement to one engine (`__engine__` is not consulted)."""

    def __init__(self, engine: Engine, replicas: Replicas | None = None) -> None:
        self.engine = engine
        self.replicas: dict[Engine, Replicas] = {engine: replicas} if replicas else {}

    def get_bind(
        self, mapper: Mapper[Any] | type[Any] | None = None, clause: ClauseElement | None = None
    ) -> Engine | Connection:
        return self.engine

    def engine_for_table(self, table: Table) -> Engine:
        return self.engine


class ModelRouter:
    """Routes a model's statements to the engine its class names in `__engine__`.

    Args:
        default: the engine of models without `__engine__` (and of statements about no model).
        build: makes the engine for a name; called once per name, on first use.
        metadata: whose mapped models are checked now, so that a model naming an engine
            that `build` cannot make fails at once rather than at its first query.

    """

    def __init__(
        self,
        default: Engine,
        build: Callable[[str], Engine],
        *,
        registry_models: list[type[Any]] | None = None,
        replicas: Mapping[Engine, Replicas] | None = None,
        build_replicas: Callable[[str], Replicas | None] | None = None,
    ) -> None:
        self.default = default
        self._build = build
        self._build_replicas = build_replicas
        self.replicas: dict[Engine, Replicas] = dict(replicas or {})
        self.engines: dict[str, Engine] = {}
        self._tables: dict[Table, str] = {}
        for model in registry_models or []:
            name = engine_name_of(model)
            table = getattr(model, "__table__", None)
            if name is not None:
                self.engine(name)
                if isinstance(table, Table):
                    self._tables[table] = name

    def engine(self, name: str | None) -> Engine:
        """The engine called `name` (None or "postgres": the default one), built on first use."""
        if name is None or name == _DEFAULT_ENGINE:
            return self.default
        engine = self.engines.get(name)
        if engine is None:
            engine = self.engines[name] = self._build(name)
            replicas = self._build_replicas(name) if self._build_replicas is not None else None
            if replicas:
                self.replicas[engine] = replicas
        return engine

    def get_bind(
        self, mapper: Mapper[Any] | type[Any] | None = None, clause: ClauseElement | None = None
    ) -> Engine | Connection:
        return self.engine(engine_name_of(mapper))

    def engine_for_table(self, table: Table) -> Engine:
        return self.engine(self._tables.get(table))


def _section(graph: Graph, name: str) -> Mapping[str, Any]:
    section = graph.config.get(name)
    postgres = section.get("postgres") if isinstance(section, Mapping) else None
    if not isinstance(postgres, Mapping):
        raise ValidationError(
            f"A model routes to engine {name!r} (`__engine__ = {name!r}`), but the configuration has no "
            f"`{name}.postgres` section: configure it like `postgres` (e.g. "
            f"{graph.metadata.name.upper().replace('-', '_')}__{name.upper()}__POSTGRES__DATABASE_NAME), "
            "or remove `__engine__` from the model."
        )
    return postgres


def configure_default_engine_routing_strategy(graph: Graph) -> DefaultRouter:
    """Every statement to the `postgres` engine (reads to its replicas, when configured).

    Models that name an `__engine__` are reported with a warning: this strategy keeps
    them on `postgres` (as 3.x's default did); `model_engine_routing_strategy` routes them.

    """
    from microcosm_postgres.models import Model

    named = sorted(
        f"{mapper.class_.__name__} ({engine_name_of(mapper)!r})"
        for mapper in Model.registry.mappers
        if engine_name_of(mapper) is not None
    )
    if named:
        logger.warning(
            "Models name an __engine__ but sessionmaker.engine_routing_strategy is the default one, which keeps "
            "them on the postgres engine: %s. Set it to model_engine_routing_strategy to route them.",
            ", ".join(named),
        )
    return DefaultRouter(graph.postgres, make_replicas(graph.metadata, graph.config["postgres"]))


def configure_model_engine_routing_strategy(graph: Graph) -> ModelRouter:
    """Models with `__engine__ = "<name>"` to an engine built from `<name>.postgres.*`.

    Raises:
        microcosm.errors.ValidationError: when a mapped model names an engine that has no
            `<name>.postgres` configuration.

    """
    from microcosm_postgres.models import Model

    def build(name: str) -> Engine:
        return make_engine(graph.metadata, _section(graph, name), key=f"{name}.postgres")

    def build_replicas(name: str) -> Replicas | None:
        return make_replicas(graph.metadata, _section(graph, name), key=f"{name}.postgres")

    models = [mapper.class_ for mapper in Model.registry.mappers]
    default_replicas = make_replicas(graph.metadata, graph.config["postgres"])
    return ModelRouter(
        graph.postgres,
        build,
        registry_models=models,
        replicas={graph.postgres: default_replicas} if default_replicas else None,
        build_replicas=build_replicas,
    )


def router_for(graph: Graph) -> EngineRouter:
    """The router `sessionmaker.engine_routing_strategy` names.

    Raises:
        microcosm.errors.ValidationError: when no component of that name is bound.

    """
    name = str(graph.config["sessionmaker"]["engine_routing_strategy"])
    try:
        router = getattr(graph, name)
    except NotBoundError as error:
        raise ValidationError(
            f"sessionmaker.engine_routing_strategy is {name!r}, which names no component: use "
            "'default_engine_routing_strategy' or 'model_engine_routing_strategy' (or bind your own)."
        ) from error
    if not callable(getattr(router, "get_bind", None)):
        raise ValidationError(
            f"sessionmaker.engine_routing_strategy names {name!r}, which has no get_bind(mapper, clause): "
            "it is not an engine routing strategy."
        )
    return router  # type: ignore[no-any-return]


def tables_by_engine(graph: Graph, metadata: MetaData) -> list[tuple[Engine, list[Table]]]:
    """The tables of `metadata` grouped by the engine they route to, the `postgres` engine first
    (also when none of its tables are in `metadata`); tables in dependency order."""
    router = router_for(graph)
    engine_for_table = getattr(router, "engine_for_table", None)
    groups: dict[Engine, list[Table]] = {graph.postgres: []}
    for table in metadata.sorted_tables:
        engine = engine_for_table(table) if engine_for_table is not None else graph.postgres
        groups.setdefault(engine, []).append(table)
    return list(groups.items())


def allow_cross_engine_writes(session: Session, allow: bool = True) -> None:
    """Let `session`'s transactions write through several engines (each commits on its own:
    a failure between the commits leaves one written and the other not)."""
    session.info[ALLOW_CROSS_ENGINE_WRITES] = allow


def written_engines(session: Session) -> frozenset[Engine]:
    """The engines the session's current transaction has written through."""
    return frozenset(session.info.get(_WRITTEN, ()))


def note_write(session: Session, bind: Engine | Connection) -> None:
    """Record that the session's transaction writes through `bind`.

    Raises:
        CrossEngineTransactionError: when it already wrote through another engine and
            the session has not opted in (`allow_cross_engine_writes`).

    """
    engine = bind.engine if isinstance(bind, Connection) else bind
    written: set[Engine] = session.info.setdefault(_WRITTEN, set())
    if engine in written:
        return
    if written and not session.info.get(ALLOW_CROSS_ENGINE_WRITES):
        first = next(iter(written))
        raise CrossEngineTransactionError(
            f"This transaction already wrote to database {first.url.database!r} and now writes to "
            f"{engine.url.database!r}, through another engine: the two commits could not be atomic, so "
            "nothing was sent to the second. Write to each in its own transaction, or opt in with "
            "microcosm_postgres.factories.routing.allow_cross_engine_writes(session)."
        )
    written.add(engine)


def forget_writes(session: Session) -> None:
    """The transaction ended: the next one starts with no engine written."""
    session.info.pop(_WRITTEN, None)


class Replicas:
    """The read replicas of one primary engine, taken in turn, skipping those that do not answer."""

    def __init__(self, engines: Sequence[Engine]) -> None:
        self.engines = list(engines)
        self._turn = itertools.count()
        self._lock = threading.Lock()
        self._down_until: dict[Engine, float] = {}

    def __bool__(self) -> bool:
        return bool(self.engines)

    def choose(self) -> Engine | None:
        """A replica that answers (a pooled connection costs no round trip), or None."""
        count = len(self.engines)
        with self._lock:
            start = next(self._turn)
        for offset in range(count):
            engine = self.engines[(start + offset) % count]
            if self._down_until.get(engine, 0.0) > time.monotonic():
                continue
            try:
                engine.connect().close()
            except (SQLAlchemyError, PersistenceError) as error:
                logger.warning(
                    "Read replica %s:%s did not answer (%s); reading from the primary, trying it again in %.0f s",
                    engine.url.host,
                    engine.url.port,
                    type(error).__name__,
                    _REPLICA_RETRY_SECONDS,
                )
                self._down_until[engine] = time.monotonic() + _REPLICA_RETRY_SECONDS
                continue
            self._down_until.pop(engine, None)
            return engine
        return None

    def dispose(self) -> None:
        """Close the replicas' pooled connections."""
        for engine in self.engines:
            engine.dispose()


def _replica_settings(entry: str) -> dict[str, Any]:
    """The `postgres` keys a replica entry overrides: host and port, or what its URL gives."""
    if "://" in entry:
        url = parse_url(entry)
        given = {
            "host": url.host,
            "port": url.port,
            "database_name": url.database,
            "username": url.username,
            "password": url.password,
        }
        return {key: value for key, value in given.items() if value}
    host, separator, port = entry.rpartition(":")
    if separator and port.isdigit() and host:
        return {"host": host, "port": int(port)}
    return {"host": entry}


def make_replicas(metadata: Metadata, config: Mapping[str, Any], *, key: str = "postgres") -> Replicas | None:
    """Engines for the `replicas` of a `postgres` section (None when there are none).

    Each replica engine has the primary's settings, with the entry's host and port (or
    what its URL gives), and no connect retries: a replica that does not answer is
    skipped within one `connect_timeout`. `key` is the primary's section (for messages).

    """
    section = postgres_section(config)
    entries = section.get("replicas") or ()
    if isinstance(entries, str):
        entries = entries.replace(",", " ").split()
    engines = []
    for entry in entries:
        settings = {key: value for key, value in section.items() if key != "replicas"}
        settings.update(_replica_settings(str(entry)), engine_retries=0)
        engines.append(make_engine(metadata, settings, key=f"{key}.replicas"))
    return Replicas(engines) if engines else None


def _is_read(clause: object) -> bool:
    return bool(getattr(clause, "is_select", False))


def replica_bind(session: Session, primary: Engine, replicas: Replicas, clause: object) -> Engine:
    """The engine for a statement `session` sends to `primary`: one of its replicas, or itself.

    A read-only session reads everything from its replica; otherwise a SELECT goes to the
    replica while the transaction has not written through `primary`.

    """
    read_only = bool(session.info.get(READ_ONLY))
    if not read_only and (not _is_read(clause) or primary in session.info.get(_WRITTEN, ())):
        return primary
    chosen: dict[Engine, Engine] = session.info.setdefault(_CHOSEN, {})
    engine = chosen.get(primary)
    if engine is None:
        engine = chosen[primary] = replicas.choose() or primary
    return engine


def forget_replicas(session: Session) -> None:
    """The transaction ended: the next one chooses its replica afresh."""
    session.info.pop(_CHOSEN, None)
