"""Shard and header names shared with microcosm-postgres 3.x services.

`GLOBAL_SHARD_NAME` names the shard that holds data common to all shards (the `postgres`
engine). A request's shard comes from its client id (`X-Request-Client`) through
`client_shard.mapping`; an `X-Request-Shard` header is accepted only when it names that
same shard, never to choose one (see `factories/shards.py`).

"""

from __future__ import annotations

from typing import Final

__all__ = [
    "GLOBAL_SHARD_NAME",
    "X_REQUEST_CLIENT_HEADER",
    "X_REQUEST_SHARD_HEADER",
]

#: The shard holding data common to every shard.
GLOBAL_SHARD_NAME: Final = "global"

#: The HTTP header naming the client that made a request.
X_REQUEST_CLIENT_HEADER: Final = "X-Request-Client"

#: The HTTP header naming the shard a request is for (checked, never trusted to choose).
X_REQUEST_SHARD_HEADER: Final = "X-Request-Shard"
