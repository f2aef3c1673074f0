"""Encrypted v2 columns vs. plaintext, with the materials cache off and on, side by side.

    python benchmarks/encryption_bench.py [--driver postgresql+psycopg] [--rows 10000] [--rounds 3] [--kms]
                                          [--database example_test_bench_db]

Two workloads over `--rows` rows of one tenant, each through the Store:

- encrypt+insert: build the instances (an encrypted attribute encrypts when it is set)
  and `create_many(attach=False)` them in one transaction;
- select+decrypt: `search()` every row of the tenant and read the value (an encrypted
  attribute decrypts on first read).

Three columns: a plaintext model (the denominator), and a model whose value is an
`encryption(...)` column with a beacon, once with `materials_manager.enable_cache` off and
once on. Rounds alternate the columns so each sees the same machine state; the table
prints the median seconds per workload and each column's ratio to plaintext.

By default the keys are the testing graph's static keys (no key service: the cost is the
AWS Encryption SDK's own work, a data key per message). `--kms`
starts a local KMS (moto's server mode on 127.0.0.1, a free port; `moto[server]` is in
the `test` extra) and uses real KMS keys through it, and also prints the KMS calls each
column made. Uses the example service's test database, or `--database` (created when
missing on the configured server); it creates and drops its two bench tables. Timings are printed, never asserted.

"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

from microcosm.api import create_object_graph, load_each, load_from_dict, load_from_environ
from sqlalchemy import MetaData, String, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.encryption.v2.column import encryption
from microcosm_postgres.encryption.v2.encoders import StringEncoder
from microcosm_postgres.encryption.v2.encryptors import AwsKmsEncryptor, set_encryptor_context
from microcosm_postgres.models import PrimaryKeyMixin
from microcosm_postgres.store import Store
from microcosm_postgres.testing.database import ensure_test_database, test_server

TENANT = "bench-client"


class BenchBase(DeclarativeBase):
    metadata = MetaData()


class BenchPlain(PrimaryKeyMixin, BenchBase):
    __tablename__ = "bench_plain_person"

    client_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String)


class BenchSecret(PrimaryKeyMixin, BenchBase):
    __tablename__ = "bench_secret_person"

    client_id: Mapped[str] = mapped_column(String(64))
    name = encryption("name", AwsKmsEncryptor(), StringEncoder())
    name_encrypted: Mapped[bytes | None] = name.encrypted()
    name_unencrypted: Mapped[str | None] = name.unencrypted()
    name_beacon: Mapped[str | None] = name.beacon(index=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def local_kms() -> Iterator[Callable[[], str]]:
    """A moto KMS server on loopback, the AWS environment pointed at it; yields a key maker."""
    import botocore.session
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server logs each request
    saved = dict(os.environ)
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE="/dev/null",
        AWS_SHARED_CREDENTIALS_FILE="/dev/null",
        AWS_EC2_METADATA_DISABLED="true",
    )
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ["AWS_ENDPOINT_URL_KMS"] = f"http://127.0.0.1:{port}"
    try:
        client = botocore.session.Session().create_client("kms", region_name="us-east-1")
        yield lambda: str(client.create_key(Description="encryption bench")["KeyMetadata"]["Arn"])
    finally:
        server.stop()
        os.environ.clear()
        os.environ.update(saved)


def make_graph(postgres: dict[str, Any], *, cache: bool, key_id: str | None) -> Any:
    registry: dict[str, Any] = {"context_keys": [TENANT], "key_ids": [key_id or "bench-key"]}
    if key_id is not None:  # KMS: a production-style graph, with its beacon key
        registry["beacon_keys"] = ["bench-beacon-key-0123456789abcdef"]
    config = {"multi_tenant_key_registry": registry, "materials_manager": {"enable_cache": cache}}
    if postgres:
        config["postgres"] = postgres
    loader = load_each(load_from_environ, load_from_dict(config))
    return create_object_graph(name="example", testing=key_id is None, loader=loader)


def counting_kms(graph: Any) -> Counter[str]:
    calls: Counter[str] = Counter()
    graph.materials_manager.botocore_session.register(
        "before-call.kms", lambda model, **kwargs: calls.update([model.name])
    )
    return calls


def write(graph: Any, store: Store[Any], model: Any, names: list[str]) -> None:
    """encrypt+insert: build the instances (encrypting) and insert them in one transaction."""
    with SessionContext(graph), transaction():
        store.create_many([model(client_id=TENANT, name=value) for value in names], attach=False)


def read(graph: Any, store: Store[Any], rows: int) -> None:
    """select+decrypt: every row, and its value."""
    with SessionContext(graph):
        values = [row.name for row in store.search()]
    assert len(values) == rows
    assert values[0].startswith("person number"), values[0]


def timed(func: Callable[[], Any]) -> float:
    started = time.perf_counter()
    func()
    return time.perf_counter() - started


def run(args: argparse.Namespace, postgres: dict[str, Any], new_key: Callable[[], str] | None) -> None:
    key_id = new_key() if new_key is not None else None
    graphs = {
        "plaintext": make_graph(postgres, cache=False, key_id=key_id),
        "cache off": make_graph(postgres, cache=False, key_id=key_id),
        "cache on": make_graph(postgres, cache=True, key_id=key_id),
    }
    calls = {name: counting_kms(graph) for name, graph in graphs.items()} if new_key is not None else {}
    engine = graphs["plaintext"].postgres
    BenchBase.metadata.drop_all(engine)
    BenchBase.metadata.create_all(engine)
    names = [f"person number {index}" for index in range(args.rows)]
    writes: dict[str, list[float]] = {name: [] for name in graphs}
    reads: dict[str, list[float]] = {name: [] for name in graphs}
    try:
        for round_number in range(args.rounds):
            order = list(graphs) if round_number % 2 == 0 else list(reversed(graphs))
            for name in order:
                graph = graphs[name]
                model: Any = BenchPlain if name == "plaintext" else BenchSecret
                store: Store[Any] = Store(graph, model)
                with graph.postgres.begin() as connection:
                    connection.execute(text(f"TRUNCATE {model.__tablename__}"))
                with set_encryptor_context(TENANT, graph.multi_tenant_encryptor):
                    writes[name].append(timed(partial(write, graph, store, model, names)))
                    reads[name].append(timed(partial(read, graph, store, args.rows)))
    finally:
        BenchBase.metadata.drop_all(engine)
        for graph in graphs.values():
            graph.postgres.dispose()

    driver = engine.dialect.driver
    keys = "KMS keys (local moto server)" if new_key is not None else "static keys (testing graph)"
    print(f"{args.rows:,} rows, {driver}, {keys}, median of {args.rounds} rounds")
    print(f"{'':16}{'':12}{'seconds':>10}{'ratio':>9}")
    for label, timings in (("encrypt+insert", writes), ("select+decrypt", reads)):
        base = statistics.median(timings["plaintext"])
        for name in graphs:
            median = statistics.median(timings[name])
            line = f"{label if name == 'plaintext' else '':16}{name:12}{median:10.3f}{median / base:8.1f}x"
            print(line)
    if calls:
        for name in ("cache off", "cache on"):
            per_round = {operation: count // args.rounds for operation, count in sorted(calls[name].items())}
            print(f"KMS calls per round, {name}: {per_round}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--driver", default=None, help="postgres.driver (default: config / psycopg2)")
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kms", action="store_true", help="KMS keys on a local moto server instead of static keys")
    parser.add_argument("--database", default=None, help="postgres.database_name (default: example_test_db)")
    args = parser.parse_args()
    postgres = {"driver": args.driver} if args.driver else {}
    if args.database:
        postgres["database_name"] = args.database
    with test_server("example") as server:
        ensure_test_database("example", server, database_name=args.database)
        if args.kms:
            with local_kms() as new_key:
                run(args, postgres, new_key)
        else:
            run(args, postgres, None)


if __name__ == "__main__":
    main()
