"""`ReencryptionCli`: re-encrypt a tenant's v2 values under its current keys, and audit.

After a tenant's keys change (`multi_tenant_key_registry.key_ids`), its stored values
are still under the old keys, and a tenant that got keys still has values in plaintext.
`reencrypt` rewrites them; `audit` counts, per model and tenant, the values under the
current keys, under other keys, and in plaintext.

    cli = ReencryptionCli(
        instance_iterators={"employee": lambda client_id: graph.employee_store.search(client_id=client_id)},
        base_models_mapping={"employee": Employee},
        graph=graph,
    )
    cli.main(["reencrypt", "--client-id", "client-a", "--no-dry-run"])
    cli.main(["audit"])

- `instance_iterators`: per model name, a function giving the tenant's rows (called in
  a session of `graph`, with the tenant's encryption context set); only their primary
  keys are used.
- `base_models_mapping`: per model name, the model class; its `encryption(...)`
  attributes are the values handled.

`reencrypt --client-id C` is a dry run unless `--no-dry-run`: it writes nothing, and it
decrypts each value that needs rewriting (as the real run will), so it reports the
values the tenant's keys can no longer open (their number and the first error; exit
status 1) before a real run fails on them. Keep a retired key id listed until
re-encryption is done. A real run works in batches of rows (`--batch-size`, default 100):
each batch is one transaction that locks its rows, re-reads them, and rewrites the
values that need it (new ciphertext, new beacon), so a failure leaves every batch either
fully done or untouched. Values already under the tenant's current keys are skipped, so
a run that stopped is resumed by running it again. A progress bar goes to standard
error; the counts go to standard output. A failure prints one line on standard error and
exits with status 1 (after the batches already committed).

`audit` reads message headers only (no decryption, no key service): it needs no context.
A message names its tenant; a plaintext value does not, so its tenant comes from the row:
the model's tenant column (the attribute `__encryption_context_key__` names, else a
`client_id` column), or, with `audit --client-id C`, the rows C's instance iterator gives.
Plaintext values that neither attributes are counted under the tenant "-" ("unknown").

"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from sqlalchemy import inspect, select, tuple_
from sqlalchemy.exc import SQLAlchemyError

from microcosm_postgres._cli import failure_line
from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.encryption.errors import DecryptionError, EncryptionConfigError, EncryptionError
from microcosm_postgres.encryption.v2.column import encryption
from microcosm_postgres.encryption.v2.encryptors import set_encryptor_context
from microcosm_postgres.errors import PersistenceError, translating
from microcosm_postgres.reencryption.progress import Progress

__all__ = [
    "AuditCount",
    "ReencryptionCli",
    "ReencryptionCount",
    "encrypted_attributes",
]

InstanceIterator = Callable[[str], Iterable[Any]]

# What a stored value is, for a tenant.
CURRENT = "current"  # a message of the tenant under its current keys
STALE = "stale"  # a message of the tenant under other keys: re-encrypt
PLAINTEXT = "plaintext"  # a plaintext value (of a tenant that had no keys when it was written)
FOREIGN = "foreign"  # a message of another tenant
UNREADABLE = "unreadable"  # bytes that are not a message
EMPTY = "empty"  # no value
NO_KEYS = "no-keys"  # a message of a tenant that has no keys in the configuration


def encrypted_attributes(model: type[Any]) -> dict[str, encryption[Any]]:
    """The `encryption(...)` attributes of `model`, by attribute name."""
    return {
        name: descriptor
        for name, descriptor in inspect(model).all_orm_descriptors.items()
        if isinstance(descriptor, encryption)
    }


@dataclass
class ReencryptionCount:
    """What `reencrypt` did (or, in a dry run, would do) to one model's rows of a tenant."""

    model: str
    rows: int = 0
    reencrypted: int = 0  # stale messages written again under the current keys
    encrypted: int = 0  # plaintext values encrypted
    current: int = 0  # values already under the current keys (skipped)
    foreign: int = 0  # another tenant's messages among the rows (left alone)
    unreadable: int = 0  # bytes that are not a message (left alone)
    undecryptable: int = 0  # dry run: messages to rewrite that the tenant's keys do not open
    first_error: str | None = None  # dry run: the first of those failures, in one line

    @property
    def changed(self) -> int:
        return self.reencrypted + self.encrypted


@dataclass
class AuditCount:
    """Values of one model, by tenant and state (`current`, `stale`, `plaintext`, ...)."""

    model: str
    counts: dict[tuple[str, str], int] = field(default_factory=dict)  # (tenant, state) -> values

    def add(self, tenant: str, state: str) -> None:
        self.counts[(tenant, state)] = self.counts.get((tenant, state), 0) + 1


class ReencryptionCli:
    """The `reencrypt` and `audit` commands over a service's encrypted models (see the module doc).

    Raises (at construction):
        EncryptionConfigError: a model name without an iterator or model class, or a
            model without `encryption(...)` attributes.

    """

    def __init__(
        self,
        instance_iterators: Mapping[str, InstanceIterator],
        base_models_mapping: Mapping[str, type[Any]],
        graph: Any,
        *,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
    ) -> None:
        missing = sorted(set(instance_iterators) ^ set(base_models_mapping))
        if missing:
            raise EncryptionConfigError(
                f"ReencryptionCli needs an instance iterator and a model class for each model name; "
                f"only one is given for: {', '.join(missing)}."
            )
        self.instance_iterators = dict(instance_iterators)
        self.base_models_mapping = dict(base_models_mapping)
        self.graph = graph
        self.stdout = stdout
        self.stderr = stderr
        self._attributes = {}
        for name, model in self.base_models_mapping.items():
            attributes = encrypted_attributes(model)
            if not attributes:
                raise EncryptionConfigError(f"{model.__name__} ({name!r}) has no encryption(...) attribute to handle.")
            self._attributes[name] = attributes

    # --- command line -------------------------------------------------------------

    def parser(self) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(
            prog=f"{self.graph.metadata.name}-reencryption",
            description="Re-encrypt a tenant's encrypted values under its current keys, or audit them.",
        )
        commands = parser.add_subparsers(dest="command", required=True)
        reencrypt = commands.add_parser("reencrypt", help="re-encrypt one tenant's values (dry run by default)")
        reencrypt.add_argument("--client-id", required=True, help="the tenant (encryption context key)")
        reencrypt.add_argument(
            "--no-dry-run", dest="dry_run", action="store_false", help="write (the default only counts)"
        )
        reencrypt.add_argument("--batch-size", type=int, default=100, help="rows per transaction (default 100)")
        reencrypt.add_argument(
            "--model", action="append", choices=sorted(self.base_models_mapping), help="only these models"
        )
        audit = commands.add_parser("audit", help="count values by tenant and keys (reads headers only)")
        audit.add_argument("--client-id", help="only this tenant's messages")
        return parser

    def main(self, argv: Sequence[str] | None = None) -> int:
        """Run a command (default `sys.argv[1:]`); return the exit status (0, or 1 after
        printing a failure's one line on standard error).

        Raises:
            SystemExit: status 2 for arguments the parser refuses.

        """
        args = self.parser().parse_args(sys.argv[1:] if argv is None else list(argv))
        try:
            if args.command == "reencrypt":
                counts = self.reencrypt(
                    args.client_id, dry_run=args.dry_run, batch_size=args.batch_size, models=args.model
                )
                if any(count.undecryptable for count in counts):
                    return 1  # the real run would fail: the report says why
            else:
                self.audit(args.client_id)
        except PersistenceError as error:
            print(failure_line(error, prefix="error"), file=self.stderr or sys.stderr)
            return 1
        return 0

    # --- reencrypt ----------------------------------------------------------------

    def reencrypt(
        self,
        client_id: str,
        *,
        dry_run: bool = True,
        batch_size: int = 100,
        models: Sequence[str] | None = None,
    ) -> list[ReencryptionCount]:
        """Re-encrypt `client_id`'s values under its current keys (see the module doc);
        print and return the counts per model.

        A dry run decrypts the values to rewrite (writing nothing): those the tenant's keys
        do not open are counted in `undecryptable` (with the first error) instead of raising.

        Raises:
            EncryptionConfigError: the tenant has no keys, or a `batch_size` below 1.
            DecryptionError, EncryptionError: a value could not be decrypted or encrypted
                (the batch it was in is rolled back; earlier batches stay done).
            PersistenceError: the database refused a batch (rolled back).

        """
        if batch_size < 1:
            raise EncryptionConfigError(f"--batch-size must be at least 1 (got {batch_size}).")
        multi_tenant_encryptor = self.graph.multi_tenant_encryptor
        if client_id not in multi_tenant_encryptor:
            raise EncryptionConfigError(
                f"{client_id!r} has no encryption keys, so there is nothing to re-encrypt with: add it to "
                "multi_tenant_key_registry.context_keys first."
            )
        counts = []
        with set_encryptor_context(client_id, multi_tenant_encryptor):
            for name in models or list(self.base_models_mapping):
                counts.append(self._reencrypt_model(name, client_id, dry_run=dry_run, batch_size=batch_size))
        self._report(counts, client_id, dry_run=dry_run)
        return counts

    def _identities(self, name: str, client_id: str) -> list[tuple[Any, ...]]:
        """The primary keys of the rows `client_id`'s instance iterator gives for model `name`."""
        with set_encryptor_context(client_id, self.graph.multi_tenant_encryptor), SessionContext(self.graph):
            return [tuple(inspect(row).identity or ()) for row in self.instance_iterators[name](client_id)]

    def _reencrypt_model(self, name: str, client_id: str, *, dry_run: bool, batch_size: int) -> ReencryptionCount:
        model = self.base_models_mapping[name]
        keys = inspect(model).primary_key
        identities = self._identities(name, client_id)
        count = ReencryptionCount(model.__name__, rows=len(identities))
        label = f"{'checking' if dry_run else 're-encrypting'} {model.__name__}"
        progress = Progress(label, len(identities), stream=self.stderr)
        try:
            for start in range(0, len(identities), batch_size):
                batch = identities[start : start + batch_size]
                statement = select(model).where(tuple_(*keys).in_(batch))
                if dry_run:
                    with SessionContext(self.graph), translating(model_name=model.__name__):
                        for row in SessionContext.session.scalars(statement):
                            self._reencrypt_row(row, name, client_id, count, write=False)
                else:
                    _add(count, self._write_batch(statement, name, client_id, start, len(batch), len(identities)))
                progress.advance(len(batch))
        finally:
            progress.close()
        return count

    def _write_batch(
        self, statement: Any, name: str, client_id: str, start: int, size: int, total: int
    ) -> ReencryptionCount:
        """One batch in one transaction: its rows locked, re-read, rewritten, committed together.

        Raises:
            EncryptionError: the batch failed (rolled back), saying how to resume.

        """
        model = self.base_models_mapping[name]
        count = ReencryptionCount(model.__name__)
        try:
            with SessionContext(self.graph), translating(model_name=model.__name__), transaction():
                for row in SessionContext.session.scalars(statement.with_for_update()):
                    self._reencrypt_row(row, name, client_id, count, write=True)
        except (PersistenceError, SQLAlchemyError) as error:
            rows = f"rows {start + 1}-{start + size} of {total}"
            raise EncryptionError(
                f"Re-encrypting {model.__name__} {rows} for {client_id!r} failed ({_summary(error)}): that batch "
                f"was rolled back; the {start} rows before it are done. Fix the cause and run the same command "
                "again to resume."
            ) from error
        return count

    def _reencrypt_row(self, row: Any, name: str, client_id: str, count: ReencryptionCount, *, write: bool) -> None:
        for attribute, column in self._attributes[name].items():
            state = self._state(row, column, client_id)
            if state == STALE and not write:
                # Decrypt as the real run will (the column, in the tenant's context), write nothing.
                try:
                    getattr(row, attribute)
                except DecryptionError as error:
                    count.undecryptable += 1
                    if count.first_error is None:
                        count.first_error = _summary(error)
                    continue
            if state == STALE or state == PLAINTEXT:
                if state == STALE:
                    count.reencrypted += 1
                else:
                    count.encrypted += 1
                if write:
                    # The attribute decrypts with the tenant's keys (a failure raises: never a
                    # redacted value written back) and encrypts under its current keys.
                    setattr(row, attribute, getattr(row, attribute))
            elif state == CURRENT:
                count.current += 1
            elif state == FOREIGN:
                count.foreign += 1
            elif state == UNREADABLE:
                count.unreadable += 1

    def _state(self, row: Any, column: encryption[Any], client_id: str) -> str:
        names = column._names(type(row))
        ciphertext = getattr(row, names["encrypted"])  # type: ignore[arg-type]
        if ciphertext is None:
            return EMPTY if getattr(row, names["unencrypted"]) is None else PLAINTEXT  # type: ignore[arg-type]
        return self._message_state(bytes(ciphertext), client_id)[1]

    def _message_state(self, ciphertext: bytes, client_id: str | None) -> tuple[str, str]:
        """(tenant, state) of a stored message; `client_id` None: whichever tenant it names."""
        from microcosm_postgres.encryption.v2._messages import read_header

        header = read_header(ciphertext)
        if header is None or header.tenant is None:
            return "?", UNREADABLE
        if client_id is not None and header.tenant != client_id:
            return header.tenant, FOREIGN
        multi_tenant_encryptor = self.graph.multi_tenant_encryptor
        if header.tenant not in multi_tenant_encryptor:
            return header.tenant, NO_KEYS
        tenant = multi_tenant_encryptor[header.tenant]
        # The encryptor's own mapping of a data key's provider info to a configured key id
        # (a static key's info carries the IV after the id): one place decides it.
        under = {tenant._key_id_of(provider) for provider in header.key_providers}
        return header.tenant, CURRENT if under == set(tenant.key_ids) else STALE

    def _report(self, counts: list[ReencryptionCount], client_id: str, *, dry_run: bool) -> None:
        out = self.stdout or sys.stdout
        verb = "would re-encrypt" if dry_run else "re-encrypted"
        for count in counts:
            print(
                f"{count.model}: {count.rows} rows of {client_id}; {verb} {count.reencrypted} values, "
                f"{'would encrypt' if dry_run else 'encrypted'} {count.encrypted} plaintext values; "
                f"{count.current} already under the current keys"
                + (f"; {count.foreign} of another tenant" if count.foreign else "")
                + (f"; {count.unreadable} unreadable" if count.unreadable else "")
                + (
                    f"; {count.undecryptable} cannot be decrypted (first: {count.first_error})"
                    if count.undecryptable
                    else ""
                ),
                file=out,
            )
        total = sum(count.changed for count in counts)
        undecryptable = sum(count.undecryptable for count in counts)
        if dry_run and undecryptable:
            print(
                f"Dry run: {undecryptable} values cannot be decrypted with {client_id}'s keys, so --no-dry-run "
                "would fail on them: list the key ids they were made under again (keep a retired key until "
                f"re-encryption is done), then run again. {total} other values to rewrite; nothing written.",
                file=out,
            )
        elif dry_run:
            print(f"Dry run: {total} values to rewrite, nothing written (pass --no-dry-run to write).", file=out)
        else:
            print(f"Done: {total} values rewritten for {client_id}.", file=out)

    # --- audit --------------------------------------------------------------------

    def audit(self, client_id: str | None = None) -> list[AuditCount]:
        """Count every model's values by tenant and state, from message headers only; print
        and return them. A plaintext value's tenant is its row's (see the module doc), "-"
        when nothing tells it."""
        audits = []
        for name, model in self.base_models_mapping.items():
            tenant_column = _tenant_column(model)
            rows_of_client = None
            if tenant_column is None and client_id is not None:
                rows_of_client = set(self._identities(name, client_id))
            keys = list(inspect(model).primary_key)
            audit = AuditCount(model.__name__)
            with SessionContext(self.graph):
                for column in self._attributes[name].values():
                    encrypted = column._attribute(model, "encrypted")
                    plaintext = column._attribute(model, "unencrypted")
                    tenant_of_row = keys if tenant_column is None else [tenant_column]
                    statement = select(encrypted, plaintext.is_not(None), *tenant_of_row).execution_options(
                        yield_per=1000
                    )
                    for ciphertext, has_plaintext, *row in SessionContext.session.execute(statement):
                        if ciphertext is not None:
                            tenant, state = self._message_state(bytes(ciphertext), None)
                        elif has_plaintext:
                            if tenant_column is not None:
                                tenant = "-" if row[0] is None else str(row[0])
                            elif rows_of_client is not None and tuple(row) in rows_of_client:
                                tenant = str(client_id)
                            else:
                                tenant = "-"
                            state = PLAINTEXT
                        else:
                            continue
                        if client_id is None or tenant == client_id:
                            audit.add(tenant, state)
            audits.append(audit)
        out = self.stdout or sys.stdout
        for audit in audits:
            if not audit.counts:
                print(f"{audit.model}: no values", file=out)
            for (tenant, state), number in sorted(audit.counts.items()):
                print(f"{audit.model}\t{tenant}\t{state}\t{number}", file=out)
        return audits


def _tenant_column(model: type[Any]) -> Any:
    """The model's tenant column: the attribute `__encryption_context_key__` names, else a
    `client_id` column; None when it has neither."""
    columns = inspect(model).columns
    name = getattr(model, "__encryption_context_key__", None) or "client_id"
    return columns[name] if name in columns else None


def _summary(error: BaseException) -> str:
    """A failure in one line: a typed error's class and message, or what the database said."""
    if isinstance(error, PersistenceError):
        return f"{type(error).__name__}: {' '.join(str(error).split())}"
    orig = getattr(error, "orig", None) or error
    lines = str(orig).strip().splitlines()
    return f"{type(orig).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def _add(total: ReencryptionCount, batch: ReencryptionCount) -> None:
    """Add a committed batch's counts (a batch that failed adds nothing)."""
    for name in ("reencrypted", "encrypted", "current", "foreign", "unreadable", "undecryptable"):
        setattr(total, name, getattr(total, name) + getattr(batch, name))
