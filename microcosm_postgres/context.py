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
from functools import wraps
from types import TracebackType
from typing import Any, TypeVar, cast, overload

from sqlalchemy import exc as sa_exc
from sqlalchemy.exc import DBAPIError, ResourceClosedError
from sqlalchemy.orm import Session, SessionTransaction

from microcosm_postgres import _sessions
from microcosm_postgres.errors import (
    CONNECTION_FAILURE,
    CommitOutcomeUnknownError,
    DatabaseUnavailableError,
    PersistenceError,
    ShardChangeError,
    TransactionAbortedError,
    make_error,
    translate,
    translating,
)

__all__ = [
    "SessionContext",
    "aborted_error",
    "in_transaction_block",
    "note_failure",
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
# What first failed in the current transaction() block (kept in Session.info until the
# block that failed ends), named by the "transaction aborted" error of later statements.
_FIRST_FAILURE = "microcosm_postgres.first_failure"


class _SessionContextType(type):
    @property
    def session(cls) -> Session:
        """The innermost open session of this thread / task.

        Raises:
            SessionNotOpenError: when no SessionContext is open.

        """
        return _sessions.innermost().session

    @property
    def graph(cls) -> Any:
        """The graph of the innermost open session.

        Raises:
            SessionNotOpenError: when no SessionContext is open.

        """
        return _sessions.innermost().graph


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

    def __init__(
        self,
        graph: Any,
        expire_on_commit: bool = False,
        *,
        session: Session | None = None,
        read_only: bool = False,
        shard: str | None = None,
    ) -> None:
        """
        Args:
            graph: the object graph whose `sessionmaker` makes the session.
            expire_on_commit: expire loaded instances at commit (SQLAlchemy's default is
                True; ours is False, so objects stay readable after their transaction).
            session: use this session instead of making one (it is not closed on exit);
                for test fixtures that bind a session to an outer transaction.
            read_only: send every statement to a read replica (`postgres.replicas`; the
                primary when none is configured or none answers).
            shard: the shard the session works on (`shards.<name>.postgres`); None means
                `global` (the `postgres` engine), or the shard of a `sharded_subgraph`
                graph. Checked when the context opens (`UnknownShardError`, 400) and fixed
                for the session's life; the graph's stores then use that shard.

        """
        self.graph = graph
        self.read_only = read_only
        self.expire_on_commit = expire_on_commit
        self.session: Session | None = None
        self._given = session
        self._shard = shard

    @property
    def shard(self) -> str:
        """The shard this context's session works on (`global` unless one was chosen); read-only."""
        from microcosm_postgres.sharded_subgraph import shard_of

        return self._shard if self._shard is not None else shard_of(self.graph)

    def _shard_graph(self) -> Any:
        """The graph-like of this context's shard (the graph itself for `global`)."""
        from microcosm_postgres.sharded_subgraph import subgraph

        return subgraph(self.graph, self.shard) if self._sharded() else self.graph

    def _sharded(self) -> bool:
        from microcosm_postgres.sharded_subgraph import ShardGraph

        return self._shard is not None or isinstance(self.graph, ShardGraph)

    def open(self) -> SessionContext:
        """Make a session and push it; returns self. Opening twice is an error."""
        if self.session is not None:
            raise RuntimeError("This SessionContext is already open; make a new SessionContext(graph).")
        from microcosm_postgres.sharded_subgraph import parent_of

        graph, target, shard = parent_of(self.graph), self._shard_graph(), self.shard
        _refuse_shard_change(graph, shard)
        if self._given is not None:
            self.session = self._given
        else:
            extra: dict[str, Any] = {"read_only": True} if self.read_only else {}
            isolation = _sessions.isolation_for(graph, shard)
            if isolation is not None:
                # Inside a test's isolation, a session on another shard joins it (its
                # transaction() blocks are savepoints in the test's outer transactions).
                extra["join_transaction_mode"] = "create_savepoint"
            self.session = target.sessionmaker(expire_on_commit=self.expire_on_commit, **extra)
            if isolation is not None:
                isolation.adopt(self.session, shard)
        # A shard's session is the session of the parent graph (its stores), on that shard.
        _sessions.push(_sessions.Entry(graph, self.session, self))
        if self._given is not None and self._sharded():
            self.session.info.setdefault(_SHARD, shard)
        return self

    def close(self) -> None:
        """Pop this context's session and close it (returning its connection to the pool)."""
        if self.session is None:
            return
        _sessions.pop(self)
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

        target = self._shard_graph()
        require_test_graph(target, action="recreate tables")  # before touching the session
        if self.session is not None:
            self.session.rollback()
            self.session.expunge_all()
        recreate_all(target)

    @classmethod
    def make(cls, graph: Any, expire_on_commit: bool = False, *, shard: str | None = None) -> SessionContext:
        """Open a SessionContext (on `shard`, see `__init__`) and return it (close it with `.close()`).

        Raises:
            UnknownShardError: when `shard` names no shard of the graph (400).
            ShardChangeError: when a transaction of this graph on another shard is open.

        """
        return cls(graph, expire_on_commit=expire_on_commit, shard=shard).open()

    @staticmethod
    def session_for(graph: Any) -> Session:
        """The innermost open session made for `graph`.

        Raises:
            SessionNotOpenError: when no SessionContext is open for this graph.

        """
        return _sessions.session_for(graph)


# Session.info key of a session's shard (see factories.sessionmaker.SHARD; absent: global).
_SHARD = "microcosm_postgres.shard"


def _refuse_shard_change(graph: Any, shard: str) -> None:
    """Refuse a session on `shard` while a `transaction()` block of `graph` on another shard
    is open in this thread / task: the graph's stores would leave that transaction's shard.

    Raises:
        ShardChangeError: naming both shards.

    """
    from microcosm_postgres.constants import GLOBAL_SHARD_NAME

    for entry in _sessions.entries():
        if entry.graph is not graph or not in_transaction_block(entry.session):
            continue
        current = entry.session.info.get(_SHARD, GLOBAL_SHARD_NAME)
        if current != shard:
            raise ShardChangeError(
                f"A transaction on shard {current!r} is open, and a session on shard {shard!r} was asked for: "
                "one transaction belongs to one shard, and the graph's stores would leave it. Finish the "
                "transaction first, then open the other shard's SessionContext.",
                shard=shard,
            )


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

    As with Django's `atomic()`, a statement the database refuses aborts the whole
    block: later statements in it, and leaving it normally, raise
    `TransactionAbortedError` naming what failed first. To go on after a statement
    that may fail, put it in a nested block and catch the error outside that block:

        with transaction():
            try:
                with transaction():
                    company = store.create(Company(name="Acme"))
            except DuplicateModelError:
                company = store.search_first(name="Acme")

    Args:
        commit: False rolls back at the end even on success (a dry run).
        session: the session to use; default `SessionContext.session`.

    Raises:
        SessionNotOpenError: when no session is open.
        TransactionAbortedError: a statement, or the end of the block, came after a
            statement of the block failed.
        CommitOutcomeUnknownError: the connection was lost while the outermost block's COMMIT
            was in flight (it may have committed; see `transactional(idempotent=True)`).
        DatabaseUnavailableError: the connection was lost before COMMIT was sent (rolled back).

    """
    session = session if session is not None else SessionContext.session
    depth = session.info.get(_DEPTH, 0)
    with _translating_aborted(session):
        # The outermost block adopts a transaction that reads outside transaction() began.
        tx = (session.get_transaction() or session.begin()) if depth == 0 else session.begin_nested()
    session.info[_DEPTH] = depth + 1
    try:
        with _translating_aborted(session):
            yield session
            if commit:
                if session.info.get(_FIRST_FAILURE) is not None or (depth == 0 and _server_aborted(session)):
                    # PostgreSQL would turn this COMMIT into a ROLLBACK without an error.
                    raise aborted_error(session, None)
                if depth == 0:
                    session.flush()  # COMMIT itself is sent by _commit, below
                else:
                    tx.commit()
        if commit and depth == 0:
            _commit(tx)
    except BaseException:
        rollback_quietly(tx)
        session.info.pop(_FIRST_FAILURE, None)
        raise
    else:
        if not commit:
            rollback_quietly(tx)
    finally:
        session.info[_DEPTH] = depth
        if depth == 0:
            session.info.pop(_FIRST_FAILURE, None)


# PQTRANS_INERROR: libpq's "idle in a failed transaction block", the same number in
# psycopg2's `connection.info.transaction_status` and psycopg 3's `TransactionStatus`.
_INERROR = 3


def _server_aborted(session: Session) -> bool:
    """Whether the server already aborted the session's transaction (a statement failed
    and its error was caught, not raised out of the block): its COMMIT would be a ROLLBACK."""
    dbapi_connection = session.connection().connection.dbapi_connection
    status = getattr(getattr(dbapi_connection, "info", None), "transaction_status", None)
    return status is not None and int(status) == _INERROR


@contextmanager
def _translating_aborted(session: Session) -> Iterator[None]:
    """`errors.translating`, with "transaction aborted" errors naming the first failure.

    SQLAlchemy's own refusal after a failed flush (`PendingRollbackError`) is the same
    fault as PostgreSQL's 25P02, and becomes the same error.

    """
    try:
        with translating():
            yield
    except TransactionAbortedError as error:
        raise aborted_error(session, error) from error.__cause__
    except sa_exc.PendingRollbackError as error:
        raise aborted_error(session, None) from error


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


def note_failure(session: Session, description: str) -> None:
    """Record that a statement failed in the open `transaction()` block of `session`.

    Only the first failure is kept (until the block that failed ends): it is what
    aborted the transaction, and what a later "transaction aborted" error names.

    """
    session.info.setdefault(_FIRST_FAILURE, description)


def aborted_error(session: Session, error: TransactionAbortedError | None) -> TransactionAbortedError:
    """The "transaction aborted" error for a statement (or COMMIT) after a failed one.

    Its message names the failure `note_failure` recorded, when there is one, and its
    `first_failure` attribute holds that description. `error` is the translated 25P02
    (None when SQLAlchemy or this module refused before PostgreSQL was asked); an error
    that already names the first failure is returned as it is.

    """
    if error is not None and getattr(error, "first_failure", None) is not None:
        return error
    first = session.info.get(_FIRST_FAILURE)
    if error is not None and first is None:
        return error
    what = f": {first}" if first is not None else ""
    named = TransactionAbortedError(
        f"This transaction block was already aborted by an earlier failed statement{what}. "
        "PostgreSQL refuses every later statement (and turns COMMIT into ROLLBACK) until the block "
        "ends (SQLSTATE 25P02). To go on after a statement that may fail, wrap that statement in a "
        "nested `transaction()` block (a SAVEPOINT) and catch its error outside that block.",
        sqlstate="25P02",
        constraint=error.constraint if error is not None else None,
        table=error.table if error is not None else None,
    )
    named.first_failure = first
    return named


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
