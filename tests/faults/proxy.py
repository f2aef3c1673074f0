"""A loopback TCP proxy in front of a PostgreSQL server that injects network faults.

Every connection is relayed by two pump threads. Faults:

- `reset_all()`: close every relayed connection with an RST (SO_LINGER 0), both sides;
- `freeze()`: stop relaying; sockets stay open and bytes wait in the buffers (the peer
  looks alive but never answers). `thaw()` relays again;
- `partition()`: read and discard everything, both ways (bytes are dropped, sockets
  stay open: what a dropped-packet partition looks like to an application whose kernel
  still gets ACKs from the proxy's). `thaw()` ends it and resets the connections that
  lost bytes;
- `drop_next_commit_reply()`: relay the next `COMMIT` to the server, then drop the
  server's reply and reset that connection: the server committed, the client cannot know.

All traffic is on 127.0.0.1; every loop waits at most `_TICK` seconds per turn and ends
when the proxy is closed.

"""

from __future__ import annotations

import select
import socket
import struct
import threading
from dataclasses import dataclass, field

__all__ = ["FaultProxy"]

_TICK = 0.05
_CHUNK = 65536
_COMMIT = b"COMMIT\x00"


@dataclass
class _Link:
    client: socket.socket
    server: socket.socket
    closed: threading.Event = field(default_factory=threading.Event)
    commit_sent: bool = False
    dropped: bool = False
    pumps_running: int = 2


class FaultProxy:
    """Relay 127.0.0.1:`port` to `target_host`:`target_port`, with faults on demand."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(_TICK)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._links: list[_Link] = []
        self._mode = "relay"
        self._drop_commit_replies = 0
        self.commit_replies_dropped = 0
        self._stopped = threading.Event()
        self._threads = [threading.Thread(target=self._accept, name="fault-proxy-accept", daemon=True)]
        self._threads[0].start()

    # --- faults -------------------------------------------------------------------

    def freeze(self) -> None:
        self._mode = "freeze"

    def partition(self) -> None:
        self._mode = "drop"

    def thaw(self) -> None:
        """Relay again; connections that lost bytes to a partition are reset (their streams
        have holes: TCP would have given up on them)."""
        self._mode = "relay"
        with self._lock:
            damaged = [link for link in self._links if link.dropped]
        for link in damaged:
            self._reset(link)

    def reset_all(self) -> None:
        with self._lock:
            links = list(self._links)  # each leaves the list when its pumps have ended
        for link in links:
            self._reset(link)

    def drop_next_commit_reply(self, times: int = 1) -> None:
        """Drop the server's replies to the next `times` COMMITs (one per connection at a time)."""
        self._drop_commit_replies = times

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._links)

    def close(self) -> None:
        self._stopped.set()
        self.reset_all()
        for thread in self._threads:
            thread.join(timeout=5)
        self._listener.close()

    # --- relaying -----------------------------------------------------------------

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                self._abort(client)
                continue
            link = _Link(client, server)
            with self._lock:
                self._links.append(link)
            for source, sink, upstream in ((client, server, True), (server, client, False)):
                thread = threading.Thread(target=self._pump, args=(link, source, sink, upstream), daemon=True)
                thread.start()

    def _pump(self, link: _Link, source: socket.socket, sink: socket.socket, upstream: bool) -> None:
        while not link.closed.is_set() and not self._stopped.is_set():
            if self._mode == "freeze":
                link.closed.wait(_TICK)
                continue
            try:
                readable, _, _ = select.select([source], [], [], _TICK)
                if not readable:
                    continue
                data = source.recv(_CHUNK)
            except (OSError, ValueError):
                break
            if not data:
                break
            while self._mode == "freeze" and not link.closed.is_set() and not self._stopped.is_set():
                link.closed.wait(_TICK)  # read just as the freeze began: it waits too
            if self._mode == "drop":
                link.dropped = True
                continue
            if upstream and self._drop_commit_replies and _COMMIT in data:
                self._drop_commit_replies -= 1
                link.commit_sent = True
            elif not upstream and link.commit_sent:
                # The server answered COMMIT (it committed): the client never hears it.
                self.commit_replies_dropped += 1
                break
            try:
                sink.sendall(data)
            except OSError:
                break
        self._forget(link)

    def _forget(self, link: _Link) -> None:
        self._reset(link)
        with self._lock:
            # A socket closed while the other pump selects on it is really closed (the RST
            # sent) only when that select returns: the link counts until both pumps ended.
            link.pumps_running -= 1
            if link.pumps_running == 0 and link in self._links:
                self._links.remove(link)

    def _reset(self, link: _Link) -> None:
        if link.closed.is_set():
            return
        link.closed.set()
        self._abort(link.client)
        self._abort(link.server)

    @staticmethod
    def _abort(sock: socket.socket) -> None:
        """Close with an RST rather than a FIN."""
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        sock.close()
