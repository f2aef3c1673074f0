"""How long a statement waits on a truly partitioned link, with the default configuration.

    sudo python benchmarks/partition_bound.py [--drivers postgresql+psycopg2 postgresql+psycopg]

A proxy cannot make this fault: its kernel still acknowledges packets, so only the
client-side reply deadline (with `statement_timeout`) notices it (see fault_soak.py). Here
packets really go nowhere: the script re-runs itself in a private network namespace
(`unshare -n`, root only; the host's network is never touched), starts a throwaway cluster
there, sends `SELECT pg_sleep(120)` with the default configuration (no statement_timeout),
then takes the namespace's loopback down. TCP keepalives (`keepalives_idle` 10 s,
`keepalives_interval` 5 s, `keepalives_count` 3) make the kernel drop the connection; the
script prints the error and how long after the cut it came. Every wait is bounded (90 s).

"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time

DRIVERS = ("postgresql+psycopg2", "postgresql+psycopg")
_INSIDE = "MICROCOSM_POSTGRES_PARTITION_NAMESPACE"


def measure(driver: str) -> str:
    from microcosm.api import create_object_graph, load_from_dict
    from sqlalchemy import text

    from microcosm_postgres.context import SessionContext, transaction
    from microcosm_postgres.testing.server import TemporaryServer

    server = TemporaryServer.start(prefer="binaries")
    try:
        config = {
            "host": server.host,
            "port": server.port,
            "database_name": "postgres",
            "username": "postgres",
            "driver": driver,
        }
        graph = create_object_graph(name="example", testing=True, loader=load_from_dict(postgres=config))
        result: dict[str, object] = {}

        def call() -> None:
            try:
                with SessionContext(graph), transaction() as session:
                    session.execute(text("SELECT pg_sleep(120)"))
            except Exception as error:
                result["error"] = type(error).__name__
            result["end"] = time.monotonic()

        thread = threading.Thread(target=call, daemon=True)
        thread.start()
        time.sleep(1)
        subprocess.run(["ip", "link", "set", "lo", "down"], check=True)
        cut = time.monotonic()
        thread.join(90)
        waited = float(result.get("end", time.monotonic())) - cut  # type: ignore[arg-type]
        return f"{driver}: {result.get('error', 'still blocked')} {waited:.1f} s after the link went down"
    finally:
        subprocess.run(["ip", "link", "set", "lo", "up"], check=False)
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--drivers", nargs="+", default=list(DRIVERS))
    args = parser.parse_args()
    if os.environ.get(_INSIDE):
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        for driver in args.drivers:
            print(measure(driver), flush=True)
        return
    command = ["unshare", "-n", sys.executable, *sys.argv]
    subprocess.run(command, check=True, env={**os.environ, _INSIDE: "1"}, timeout=300)


if __name__ == "__main__":
    main()
