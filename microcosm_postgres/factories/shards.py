"""Shards: the `shards`, `sessionmakers` and `client_shard` components (3.x names).

A sharded service keeps the same tables in several databases, one per shard, and every
session works on exactly one of them. Configure each shard like `postgres`:

    shards.east.postgres.host = "db-east"
    shards.west.postgres.host = "db-west"
    shards.west.postgres.database_name = "example_west_db"

What a shard inherits: every `postgres.*` key the shard does not set itself (driver,
username, password, timeouts, pool sizes, `allow_destructive`, ...), except `replicas`
(the primary's replicas are not the shard's: give `shards.<name>.postgres.replicas`).
So a shard usually names only its host (and port, database). The shard `global` is the
`postgres` engine itself and cannot be configured under `shards`.

Two shards, or a shard and `postgres`, that resolve to the same server and database would
silently put their rows together: creating the `shards` component refuses that with
`ShardConfigurationError` (servers are compared as configured: `localhost` and
`127.0.0.1` are different names).

Sessions of a shard route like the graph's own sessions (the strategy
`sessionmaker.engine_routing_strategy` names), except that what would go to `postgres`
goes to the shard's engine: models with `__engine__` stay on their one routed engine,
shared by all shards.

Choosing a shard: `SessionContext(graph, shard="east")` (see `context`), and, for requests,
`client_shard`: the caller's client id (the `X-Request-Client` header) is looked up in
`client_shard.mapping` (an allow-list, client id -> shard name). A request whose client is
not mapped, or that names a shard itself (`X-Request-Shard`) other than its client's, is
refused with `ShardNotAllowedError` (403): a caller never picks a shard by naming it.

The environment variable `SHARD` limits the shard helpers (`microcosm_postgres.shards`,
`sharded_subgraph.subgraphs`, `migrate.main`) to one shard.

"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from microcosm.api import defaults, typed
from microcosm.errors import ValidationError
from sqlalchemy import Table
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.orm import Mapper, sessionmaker
from sqlalchemy.sql.elements import ClauseElement

from microcosm_postgres.constants import GLOBAL_SHARD_NAME, X_REQUEST_CLIENT_HEADER, X_REQUEST_SHARD_HEADER
from microcosm_postgres.errors import (
    InvalidConfigurationError,
    ShardConfigurationError,
    ShardNotAllowedError,
    UnknownShardError,
)
from microcosm_postgres.factories.engine import make_engine
from microcosm_postgres.factories.routing import EngineRouter, Replicas, make_replicas, router_for
from microcosm_postgres.factories.sessionmaker import RoutingSession, make_sessionmaker

if TYPE_CHECKING:
    from microcosm_postgres.graph import Graph

__all__ = [
    "SHARD_VARIABLE",
    "ClientShard",
    "ShardRouter",
    "ShardsWithFaults",
    "check_shard_name",
    "configure_client_shard",
    "configure_sessionmakers",
    "configure_shards",
    "make_shard_routers",
    "same_database",
    "selected_shard_names",
    "shard_names",
    "shard_section",
]

logger = logging.getLogger(__name__)

_V = TypeVar("_V")

#: The environment variable that limits the shard helpers to one shard.
SHARD_VARIABLE = "SHARD"


def shard_names(graph: Graph) -> list[str]:
    """`global`, then the shards configured under `shards`, in configuration order.

    Raises:
        ShardConfigurationError: a shard configured under the name `global` (which is the
            `postgres` engine: a `shards.global.postgres.*` setting would be ignored), or
            under an empty or blank name.

    """
    configured = graph.config.get("shards") or {}
    names = [str(name) for name in configured]
    prefix = graph.metadata.name.upper().replace("-", "_")
    for name in names:
        if not name.strip():
            raise ShardConfigurationError(
                f"A shard is configured with an empty name ({prefix}__SHARDS____POSTGRES__... or a "
                '`shards: {"": ...}` entry): name it, e.g. shards.east.postgres.host.',
                shard=name,
            )
        if name == GLOBAL_SHARD_NAME:
            raise ShardConfigurationError(
                f"`shards.{GLOBAL_SHARD_NAME}` cannot be configured ({prefix}__SHARDS__GLOBAL__POSTGRES__...): the "
                f"{GLOBAL_SHARD_NAME!r} shard is the `postgres` engine, so these settings would be ignored. "
                f"Configure `postgres.*` for it ({prefix}__POSTGRES__...), and give other shards other names.",
                shard=GLOBAL_SHARD_NAME,
            )
    return [GLOBAL_SHARD_NAME, *names]


def _unknown(graph: Graph, name: object) -> UnknownShardError:
    known = ", ".join(repr(known) for known in shard_names(graph))
    if not isinstance(name, str) or not name.strip():
        return UnknownShardError(
            f"No shard was named ({name!r}): a shard name cannot be empty. Name one of the shards: {known}.",
            shard=None if name is None else str(name),
        )
    return UnknownShardError(
        f"No shard named {name!r}: the shards are {known}. Name one of them, or configure "
        f"shards.{name}.postgres.* for a new one.",
        shard=str(name),
    )


def check_shard_name(graph: Graph, name: object) -> str:
    """`name` when it names a shard of `graph` (`global` or configured).

    Raises:
        UnknownShardError: when it does not (400).

    """
    if not isinstance(name, str) or name not in shard_names(graph):
        raise _unknown(graph, name)
    return name


def selected_shard_names(graph: Graph) -> list[str]:
    """The shards the shard helpers act on: every shard, or only the one `SHARD` names.

    Raises:
        UnknownShardError: when `SHARD` names no shard of the graph.

    """
    only = os.environ.get(SHARD_VARIABLE, "").strip()
    if not only:
        return shard_names(graph)
    try:
        return [check_shard_name(graph, only)]
    except UnknownShardError as error:
        raise UnknownShardError(f"The {SHARD_VARIABLE} environment variable: {error}", shard=only) from None


def shard_section(graph: Graph, name: str) -> dict[str, Any]:
    """The `postgres` settings of shard `name`: its own keys over those of `postgres`
    (without the primary's `replicas`); `global` is `postgres` itself.

    Raises:
        UnknownShardError: when `name` is no shard of the graph.

    """
    check_shard_name(graph, name)
    primary = dict(graph.config["postgres"])
    if name == GLOBAL_SHARD_NAME:
        return primary
    shard = graph.config["shards"][name]
    own = shard.get("postgres") if isinstance(shard, Mapping) else None
    if not isinstance(own, Mapping):
        raise ShardConfigurationError(
            f"Shard {name!r} has no `shards.{name}.postgres` section: configure it like `postgres` (e.g. "
            f"{graph.metadata.name.upper().replace('-', '_')}__SHARDS__{name.upper()}__POSTGRES__HOST).",
            shard=name,
        )
    primary.pop("replicas", None)
    return {**primary, **own}


def _target(url: URL) -> tuple[tuple[tuple[str, int | None], ...], str | None]:
    """Where a URL's rows land: its servers (host, port; lower-cased, sorted) and its database."""
    hosts = url.query.get("host")
    if hosts:
        entries = [hosts] if isinstance(hosts, str) else list(hosts)
        servers = []
        for entry in entries:
            host, _, port = entry.rpartition(":")
            servers.append((host.lower(), int(port)) if port.isdigit() else (entry.lower(), url.port))
        return tuple(sorted(servers, key=str)), url.database
    return (((url.host or "").lower(), url.port),), url.database


def same_database(first: URL, second: URL) -> bool:
    """Whether two connection URLs share a server (as configured) and name the same database."""
    servers_one, database_one = _target(first)
    servers_two, database_two = _target(second)
    return database_one == database_two and bool(set(servers_one) & set(servers_two))


def _where(url: URL) -> str:
    return f"{url.host or url.query.get('host')}:{url.port}, database {url.database!r}"


def _check_distinct(graph: Graph, urls: Mapping[str, URL], routed: Mapping[str, URL]) -> None:
    """Refuse shards whose rows would land in the same database as another's, or as a routed
    engine's (`__engine__`, shared by every shard); no password shown."""
    names = list(urls)
    for index, name in enumerate(names):
        if name == GLOBAL_SHARD_NAME:
            continue  # a routed engine on the `postgres` database is migrate's refusal, not ours
        for engine, url in routed.items():
            if same_database(urls[name], url):
                raise ShardConfigurationError(
                    f"Shard {name!r} resolves to the same server and database as the routed engine {engine!r} "
                    f"({_where(urls[name])}), which every shard shares: the shard's tables and the engine's would "
                    f"silently mix. Give the shard its own database (shards.{name}.postgres.database_name) or "
                    f"the engine its own ({engine}.postgres.database_name).",
                    shard=name,
                )
        for other in names[:index]:
            if same_database(urls[name], urls[other]):
                who = "the `postgres` engine (shard 'global')" if other == GLOBAL_SHARD_NAME else f"shard {other!r}"
                raise ShardConfigurationError(
                    f"Shard {name!r} resolves to the same server and database as {who} ({_where(urls[name])}): "
                    "their rows would silently land together. Give it its own host or database_name "
                    f"(shards.{name}.postgres.host / shards.{name}.postgres.database_name).",
                    shard=name,
                )


class ShardsWithFaults(dict[str, _V]):
    """Shard name -> engine (or session factory), where a shard whose own configuration is
    invalid is absent from the items and raises its `InvalidConfigurationError` (naming
    `shards.<name>.postgres.<key>`) when looked up by name, so that one bad shard fails only
    its own sessions and health report, never the other shards'.

    Attributes:
        faults: shard name -> the error its configuration raised.

    """

    def __init__(self, items: Mapping[str, _V], faults: Mapping[str, ValidationError]) -> None:
        super().__init__(items)
        self.faults: dict[str, ValidationError] = dict(faults)

    def __missing__(self, name: str) -> _V:
        fault = self.faults.get(name)
        if fault is None:
            raise KeyError(name)
        raise fault


@defaults()  # type: ignore[untyped-decorator]  # microcosm leaves it unannotated; it returns the function as is
def configure_shards(graph: Graph) -> dict[str, Engine]:
    """Shard name -> engine: `global` is `graph.postgres`, each configured shard gets an
    engine built from its `shards.<name>.postgres` section (see the module for what it inherits).

    Raises:
        ShardConfigurationError: a shard named `global` or with an empty name, a shard
            without a `postgres` section, or two shards (or a shard and `postgres`, or a shard
            and a routed engine) on the same server and database.

    A shard whose own values are invalid (of the wrong type or out of range) is not refused
    here: looking it up (`graph.shards["west"]`, a session or health check on it) raises its
    `InvalidConfigurationError`, named in full (`shards.west.postgres.port`), and the other
    shards work (see `ShardsWithFaults`); it is logged when the component is made.

    """
    engines: dict[str, Engine] = {GLOBAL_SHARD_NAME: graph.postgres}
    faults: dict[str, ValidationError] = {}
    for name in shard_names(graph)[1:]:
        try:
            engines[name] = make_engine(graph.metadata, shard_section(graph, name), key=f"shards.{name}.postgres")
        except InvalidConfigurationError as error:
            logger.error("shard %r is unusable: %s", name, error)
            faults[name] = error
    routed: dict[str, Engine] = getattr(router_for(graph), "engines", {})
    try:
        _check_distinct(
            graph,
            {name: engine.url for name, engine in engines.items()},
            {name: engine.url for name, engine in routed.items()},
        )
    except ShardConfigurationError:
        for name, engine in engines.items():
            if name != GLOBAL_SHARD_NAME:
                engine.dispose()
        raise
    return ShardsWithFaults(engines, faults)


class ShardRouter:
    """Routes like the graph's own router, with the shard's engine in place of `postgres`.

    Models with `__engine__` keep their routed engine (one for all shards); reads of the
    shard's engine go to the shard's replicas, when it has some.

    """

    def __init__(self, base: EngineRouter, primary: Engine, engine: Engine, replicas: Replicas | None) -> None:
        self.base = base
        self.primary = primary
        self.engine = engine
        base_replicas: dict[Engine, Replicas] = dict(getattr(base, "replicas", {}))
        base_replicas.pop(primary, None)
        if replicas:
            base_replicas[engine] = replicas
        self.replicas = base_replicas
        #: The routed engines (`__engine__` name -> engine), shared with the graph's router.
        self.engines: dict[str, Engine] = getattr(base, "engines", {})

    def _swap(self, bind: Engine | Connection) -> Engine | Connection:
        return self.engine if bind is self.primary else bind

    def get_bind(
        self, mapper: Mapper[Any] | type[Any] | None = None, clause: ClauseElement | None = None
    ) -> Engine | Connection:
        return self._swap(self.base.get_bind(mapper=mapper, clause=clause))

    def engine_for_table(self, table: Table) -> Engine:
        engine_for_table = getattr(self.base, "engine_for_table", None)
        engine = engine_for_table(table) if engine_for_table is not None else self.primary
        return self.engine if engine is self.primary else engine


def make_shard_routers(graph: Graph) -> dict[str, EngineRouter]:
    """Shard name -> router (`global`: the graph's own router)."""
    shards: dict[str, Engine] = graph.shards  # type: ignore[attr-defined]
    base = router_for(graph)
    routers: dict[str, EngineRouter] = {GLOBAL_SHARD_NAME: base}
    for name, engine in shards.items():
        if name != GLOBAL_SHARD_NAME:
            replicas = make_replicas(graph.metadata, shard_section(graph, name), key=f"shards.{name}.postgres")
            routers[name] = ShardRouter(base, graph.postgres, engine, replicas)
    return routers


@defaults()  # type: ignore[untyped-decorator]  # microcosm leaves it unannotated; it returns the function as is
def configure_sessionmakers(graph: Graph) -> dict[str, sessionmaker[RoutingSession]]:
    """Shard name -> session factory (`global`: `graph.sessionmaker`). Each shard's sessions
    carry their shard's name (`session.info["microcosm_postgres.shard"]`).

    Raises:
        ShardConfigurationError: see `configure_shards`.

    """
    config = graph.config["sessionmaker"]
    makers: dict[str, sessionmaker[RoutingSession]] = {GLOBAL_SHARD_NAME: graph.sessionmaker}
    for name, router in make_shard_routers(graph).items():
        if name != GLOBAL_SHARD_NAME:
            makers[name] = make_sessionmaker(
                router, allow_cross_engine_writes=bool(config["allow_cross_engine_writes"]), shard=name
            )
    return ShardsWithFaults(makers, getattr(getattr(graph, "shards", None), "faults", {}))


class ClientShard:
    """Chooses a request's shard from its client id, through an allow-list.

    `mapping` is client id -> shard name (`client_shard.mapping`); every shard it names is
    checked when the component is made. A request never chooses its shard by naming it.

    """

    def __init__(self, graph: Graph, mapping: Mapping[str, str]) -> None:
        self.mapping = {str(client): str(shard) for client, shard in mapping.items()}
        for client, shard in self.mapping.items():
            if shard not in shard_names(graph):
                raise ShardConfigurationError(
                    f"client_shard.mapping sends client {client!r} to shard {shard!r}, which is not configured "
                    f"(the shards are {', '.join(repr(name) for name in shard_names(graph))}).",
                    shard=shard,
                )

    def shard_for_client(self, client: str | None) -> str:
        """The shard of `client` (a client id).

        Raises:
            ShardNotAllowedError: when `client` is None or not in the mapping (403).

        """
        if client is None or client not in self.mapping:
            what = "it sent no client id" if client is None else f"client {client!r} is not in client_shard.mapping"
            raise ShardNotAllowedError(
                f"This request may not use a shard: {what}. Add the client to client_shard.mapping "
                f"(client id -> shard), and send its id in the {X_REQUEST_CLIENT_HEADER} header."
            )
        return self.mapping[client]

    def shard_for(self, headers: Mapping[str, str]) -> str:
        """The shard of a request with these headers (any mapping; names compared case-insensitively).

        The client id comes from `X-Request-Client`. A request may also send
        `X-Request-Shard` (as 3.x services do) only when it names its client's own shard.

        Raises:
            ShardNotAllowedError: no client id, a client not in the mapping, or an
                `X-Request-Shard` naming another shard (403).

        """
        lowered = {str(key).lower(): value for key, value in headers.items()}
        shard = self.shard_for_client(lowered.get(X_REQUEST_CLIENT_HEADER.lower()))
        named = lowered.get(X_REQUEST_SHARD_HEADER.lower())
        if named is not None and named != shard:
            raise ShardNotAllowedError(
                f"The request names shard {named!r} in {X_REQUEST_SHARD_HEADER}, but its client maps to "
                f"another shard: a request cannot choose its shard. Drop the {X_REQUEST_SHARD_HEADER} header.",
                shard=named,
            )
        return shard


def _client_mapping(value: object) -> dict[str, str]:
    """`client_shard.mapping` as given: a mapping, or (from the environment) a JSON object or
    `client:shard` pairs separated by commas."""
    if isinstance(value, Mapping):
        return {str(client): str(shard) for client, shard in value.items()}
    text = str(value or "").strip()
    if text.startswith("{"):
        loaded = json.loads(text)
        if not isinstance(loaded, dict):
            raise ShardConfigurationError("client_shard.mapping must be a JSON object of client id -> shard name.")
        return {str(client): str(shard) for client, shard in loaded.items()}
    mapping = {}
    for pair in filter(None, (entry.strip() for entry in text.split(","))):
        client, separator, shard = pair.rpartition(":")
        if not separator or not client or not shard:
            raise ShardConfigurationError(
                f"client_shard.mapping: {pair!r} is not `client:shard` (pairs separated by commas, or a JSON object)."
            )
        mapping[client.strip()] = shard.strip()
    return mapping


@defaults(  # type: ignore[untyped-decorator]  # microcosm leaves it unannotated; it returns the function as is
    # Client id (the X-Request-Client header) -> shard name: the only clients that get a shard
    # (from the environment: `client:shard,client:shard` or a JSON object).
    mapping=typed(_client_mapping, default_value={}),
)
def configure_client_shard(graph: Graph) -> ClientShard:
    """The request -> shard chooser (see `ClientShard`).

    Raises:
        ShardConfigurationError: when the mapping names a shard that is not configured.

    """
    return ClientShard(graph, _client_mapping(graph.config["client_shard"]["mapping"]))
