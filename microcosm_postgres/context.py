"""Sessions and transactions: `SessionContext`, `transaction()`, `@transactional`.

Open sessions live on a stack held in a `contextvars.ContextVar`, so they are scoped
per thread and per asyncio task (a task started inside a `SessionContext` inherits it;
open another one inside the task for a session of its own). Contexts nest: each
store asks for the innermost session opened *for its own graph*, so an inner context
for another graph never changes what the outer graph's stores see.

"""

from __future__ import annotations

import inspect
import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import wraps
from types import TracebackType
from typing import Any, TypeVar, cast, overload

from sqlalchemy.exc import DBAPIError, ResourceClosedError
from sqlalchemy.orm import Session, SessionTransaction

from microcosm_postgres.errors import (
    CONNECTION_FAILURE,
    CommitOutcomeUnknownError,
    DatabaseUnavailableError,
    PersistenceError,
    SessionNotOpenError,
    make_error,
    translate,
    translating,
)

__all__ = [
    "SessionContext",
    "in_transaction_block",
    "maybe_transactional",
    "rerun_after_unknown_commit",
    "rollback_quietly",
    "transaction",
    "transactional",
]

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

# How many transaction() blocks are open on a session (kept in Session.info).
_DEPTH = "microcosm_postgres.transaction_depth"


@dataclass(frozen=True)
class _Entry:
    graph: Any
    session: Session
    owner: SessionContext


_open_sessions: ContextVar[tuple[_Entry, ...]] = ContextVar("microcosm_postgres_sessions", default=())


def _no_session(graph: Any = None) -> SessionNotOpenError:
    which = f" for graph {graph.metadata.name!r}" if graph is not None else ""
    return SessionNotOpenError(
        f"No database session is open{which}. Wrap the call in `with SessionContext(graph):` "
        "(microcosm-flask services: SessionContext.make(graph) per request)."
    )


def _innermost() -> _Entry:
    stack = _open_sessions.get()
    if not stack:
        raise _no_session()
    return stack[-1]


class _SessionContextType(type):
    @property
    def session(cls) -> Session:
        """The innermost open session of this thread / task.

        Raises:
            SessionNotOpenError: when no SessionContext is open.

        """
        return _innermost().session

    @property
    def graph(cls) -> Any:
        """The graph of the innermost open session.

        Raises:
            SessionNotOpenError: when no SessionContext is open.

        """
        return _innermost().graph


class SessionContext(metaclass=_SessionContextType):
    """Open a session for `graph` and make it current in this thread / task.

    Usage:

        with SessionContext(graph) as context:
            context.recreate_all()          # testing only
            with transaction():
                store.create(...)

    `SessionContext.session` (on the class) is the innermost open session;
    `context.session` (on an instance) is that context's own.

    """

    def __init__(self, graph: Any, expire_on_commit: bool = False, *, session: Session | None = None) -> None:
        """
        Args:
            graph: the object graph whose `sessionmaker` makes the session.
            expire_on_commit: expire loaded instances at commit (SQLAlchemy's default is
                True; ours is False, so objects stay readable after their transaction).
            session: use this session instead of making one (it is not closed on exit);
                for test fixtures that bind a session to an outer transaction.

        """
        self.graph = graph
        self.expire_on_commit = expire_on_commit
        self.session: Session | None = None
        self._given = session

    def open(self) -> SessionContext:
        """Make a session and push it; returns self. Opening twice is an error."""
        if self.session is not None:
            raise RuntimeError("This SessionContext is already open; make a new SessionContext(graph).")
        if self._given is not None:
            self.session = self._given
        else:
            self.session = self.graph.sessionmaker(expire_on_commit=self.expire_on_commit)
        _open_sessions.set(_open_sessions.get() + (_Entry(self.graph, self.session, self),))
        return self

    def close(self) -> None:
        """Pop this context's session and close it (returning its connection to the pool)."""
        if self.session is None:
            return
        _open_sessions.set(tuple(entry for entry in _open_sessions.get() if entry.owner is not self))
        session, self.session = self.session, None
        if self._given is None:
            session.close()

    def __enter__(self) -> SessionContext:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def recreate_all(self) -> None:
        """Testing only: give the graph's database fresh, empty tables.

        Discards whatever this session has pending (the rows are going anyway).

        Raises:
            UnsafeOperationError: when the database is not a test database (named by the
                test convention, or on a throwaway server), unless `postgres.allow_destructive`
                is set; nothing is dropped then (see `operations`).

        """
        from microcosm_postgres.operations import recreate_all, require_test_graph

        require_test_graph(self.graph, action="recreate tables")  # before touching the session
        if self.session is not None:
            self.session.rollback()
            self.session.expunge_all()
        recreate_all(self.graph)

    @classmethod
    def make(cls, graph: Any, expire_on_commit: bool = False) -> SessionContext:
        """Open a SessionContext and return it (close it with `.close()`)."""
        return cls(graph, expire_on_commit=expire_on_commit).open()

    @staticmethod
    def session_for(graph: Any) -> Session:
        """The innermost open session made for `graph`.

        Raises:
            SessionNotOpenError: when no SessionContext is open for this graph.

        """
        for entry in reversed(_open_sessions.get()):
            if entry.graph is graph:
                return entry.session
        raise _no_session(graph)


def rollback_quietly(transaction: SessionTransaction) -> None:
    """Roll back `transaction` (a failed flush leaves it deactivated, still needing this).

    A transaction already closed is left alone; a rollback that fails (the connection is
    gone) is logged, because the error that caused it matters more.

    """
    try:
        transaction.rollback()
    except ResourceClosedError:
        pass
    except Exception:
        logger.warning("rollback failed", exc_info=True)


@contextmanager
def transaction(commit: bool = True, *, session: Session | None = None) -> Iterator[Session]:
    """Run a block in a transaction of the current session, and yield that session.

    The outermost block commits on success; a `transaction()` inside another is a
    SAVEPOINT, so an exception in the inner block rolls back only the inner block.
    Any exception rolls the block back and is re-raised; database faults (in the
    block or at commit) leave as their `microcosm_postgres.errors` type, chained.

    Args:
        commit: False rolls back at the end even on success (a dry run).
        session: the session to use; default `SessionContext.session`.

    Raises:
        SessionNotOpenError: when no session is open.
        CommitOutcomeUnknownError: the connection was lost while the outermost block's COMMIT
            was in flight (it may have committed; see `transactional(idempotent=True)`).
        DatabaseUnavailableError: the connection was lost before COMMIT was sent (rolled back).

    """
    session = session if session is not None else SessionContext.session
    depth = session.info.get(_DEPTH, 0)
    if depth == 0:
        # Adopt a transaction that reads outside transaction() began implicitly.
        tx = session.get_transaction() or session.begin()
    else:
        tx = session.begin_nested()
    session.info[_DEPTH] = depth + 1
    try:
        with translating():
            yield session
            if commit and depth == 0:
                session.flush()
            elif commit:
                tx.commit()
        if commit and depth == 0:
            _commit(tx)
    except BaseException:
        rollback_quietly(tx)
        raise
    else:
        if not commit:
            rollback_quietly(tx)
    finally:
        session.info[_DEPTH] = depth


def _commit(tx: SessionTransaction) -> None:
    """Commit the outermost transaction; a connection lost now leaves the outcome unknown.

    Raises:
        CommitOutcomeUnknownError: the connection was lost while COMMIT was in flight.
        PersistenceError: another database fault, translated.

    """
    try:
        tx.commit()
    except PersistenceError:
        raise  # raised by our own hooks, which know (the engine's, before COMMIT is sent)
    except Exception as error:
        typed = translate(error)
        if typed is None:
            raise
        in_flight = isinstance(error, DBAPIError) and error.statement is None  # not a flush: COMMIT itself
        if in_flight and isinstance(typed, DatabaseUnavailableError) and typed.retryable:
            logger.warning("connection lost during COMMIT: the transaction may or may not have committed")
            raise make_error("commit outcome unknown", sqlstate=CONNECTION_FAILURE) from error
        raise typed from error


def in_transaction_block(session: Session) -> bool:
    """Whether a `transaction()` block is open on `session`."""
    return bool(session.info.get(_DEPTH, 0))


@overload
def transactional(func: F, /) -> F: ...


@overload
def transactional(*, retries: int = 0, idempotent: bool = False, backoff: float = 0.05) -> Callable[[F], F]: ...


def transactional(
    func: F | None = None, /, *, retries: int = 0, idempotent: bool = False, backoff: float = 0.05
) -> F | Callable[[F], F]:
    """Run the decorated function inside `transaction()`, re-running it on retryable errors.

    `@transactional` runs it once. `@transactional(retries=3)` runs the whole function
    again, in a new transaction, after an error whose `retryable` is True (a serialization
    failure or deadlock, a connection lost before COMMIT was sent, no pooled connection
    free), up to `retries` more times, sleeping a random time up to `backoff * 2**attempt`
    seconds (at most 2 s) between attempts. The function must be safe to run again: no side
    effects outside the database, and fresh reads each time.

    Called inside another `transaction()` block, it runs once as a nested block: only the
    outermost block can be run again (the enclosing transaction is lost with the error).

    Args:
        retries: how many times to run it again; 0 runs it once.
        idempotent: also run it again after `CommitOutcomeUnknownError`, when running it
            twice writes what running it once does. `Store.create` of an instance whose id was
            set before the first attempt is idempotent: on a re-run after an unknown outcome,
            a row with that id and the same values counts as created (see `Store.create`).
        backoff: seconds of the first back-off; each next one may be twice as long.

    Raises:
        PersistenceError: the last attempt's error, or the first one that is not retryable.

    """
    if retries < 0 or backoff < 0:
        raise ValueError(f"transactional needs retries >= 0 and backoff >= 0 (got {retries}, {backoff}).")

    def decorate(function: F) -> F:
        @wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return _run_retrying(
                lambda: function(*args, **kwargs), retries=retries, idempotent=idempotent, backoff=backoff
            )

        return cast(F, wrapper)

    return decorate if func is None else decorate(func)


# Set in Session.info while a block is run again after CommitOutcomeUnknownError.
_RERUN_AFTER_UNKNOWN_COMMIT = "microcosm_postgres.rerun_after_unknown_commit"
_BACKOFF_CAP = 2.0


def rerun_after_unknown_commit(session: Session) -> bool:
    """Whether `session` is running a block again after `CommitOutcomeUnknownError` (so the
    block's first run may have committed), within `transactional(idempotent=True)`."""
    return bool(session.info.get(_RERUN_AFTER_UNKNOWN_COMMIT, False))


def _run_retrying(block: Callable[[], Any], *, retries: int, idempotent: bool, backoff: float) -> Any:
    session = SessionContext.session
    if retries == 0 or in_transaction_block(session):
        with transaction(session=session):
            return block()
    rerun_before = session.info.get(_RERUN_AFTER_UNKNOWN_COMMIT, False)
    try:
        for attempt in range(retries + 1):
            try:
                with transaction(session=session):
                    return block()
            except PersistenceError as error:
                unknown = isinstance(error, CommitOutcomeUnknownError)
                if attempt == retries or not (error.retryable or (unknown and idempotent)):
                    raise
                if unknown:
                    session.info[_RERUN_AFTER_UNKNOWN_COMMIT] = True
                delay = random.uniform(0, min(_BACKOFF_CAP, backoff * 2**attempt))
                logger.info("transaction failed (%s); running it again in %.3f s", type(error).__name__, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover
    finally:
        session.info[_RERUN_AFTER_UNKNOWN_COMMIT] = rerun_before


def maybe_transactional(func: F) -> F:
    """Like `transactional`, but a call with `commit=False` rolls back at the end.

    The `commit` keyword is passed on to the function only if its signature takes it.

    """
    takes_commit = "commit" in inspect.signature(func).parameters

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        commit = kwargs.get("commit", True) if takes_commit else kwargs.pop("commit", True)
        with transaction(commit=bool(commit)):
            return func(*args, **kwargs)

    return cast(F, wrapper)
