"""The stack of open sessions, per thread and asyncio task (private).

`SessionContext` (context.py) pushes and pops entries; `smart.py` reads the current
graph. Both sit above this module, which imports nothing else of ours but the error
classes, so the model layer can ask "which graph is current?" without importing the
session layer (and, through it, the schema operations).

"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from microcosm_postgres.errors import SessionNotOpenError

__all__: list[str] = []


@dataclass(frozen=True)
class Entry:
    graph: Any
    session: Session
    owner: object


_open_sessions: ContextVar[tuple[Entry, ...]] = ContextVar("microcosm_postgres_sessions", default=())


def no_session(graph: Any = None) -> SessionNotOpenError:
    which = f" for graph {graph.metadata.name!r}" if graph is not None else ""
    return SessionNotOpenError(
        f"No database session is open{which}. Wrap the call in `with SessionContext(graph):` "
        "(microcosm-flask services: SessionContext.make(graph) per request)."
    )


def push(entry: Entry) -> None:
    _open_sessions.set(_open_sessions.get() + (entry,))


def pop(owner: object) -> None:
    _open_sessions.set(tuple(entry for entry in _open_sessions.get() if entry.owner is not owner))


def innermost() -> Entry:
    """The innermost open entry. Raises SessionNotOpenError when there is none."""
    stack = _open_sessions.get()
    if not stack:
        raise no_session()
    return stack[-1]


def current_graph() -> Any | None:
    """The graph of the innermost open session, or None."""
    stack = _open_sessions.get()
    return stack[-1].graph if stack else None


def session_for(graph: Any) -> Session:
    """The innermost open session made for `graph`. Raises SessionNotOpenError."""
    for entry in reversed(_open_sessions.get()):
        if entry.graph is graph:
            return entry.session
    raise no_session(graph)


def graph_of(session: Session) -> Any | None:
    """The graph whose open entry holds `session` (innermost first), or None when no
    SessionContext of this thread / task opened it."""
    for entry in reversed(_open_sessions.get()):
        if entry.session is session:
            return entry.graph
    return None
