"""Shard and header names shared with microcosm-postgres 3.x services.

Sharded services route a request to a shard named by the `X-Request-Shard` header;
`GLOBAL_SHARD_NAME` names the shard that holds data common to all shards. The shards
themselves are configured elsewhere (`factories/shards.py`).

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

#: The HTTP header naming the shard a request is for.
X_REQUEST_SHARD_HEADER: Final = "X-Request-Shard"
