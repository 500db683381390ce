"""moto server with DynamoDB transactions made cheap, atomic and as strict as AWS.

moto 5 backs up every table a TransactWriteItems touches with copy.deepcopy, once per item in the
transaction, so one append costs O(items x table size, stream records included) and the local stack
slows down as it fills (measured: 0.1 s for the first 100-event append, 2 s by the fifth).
This launcher replaces that one method with DynamoDB's own semantics, which keeps the cost per
transaction independent of table size:

1. check every item's condition against the current state (nothing written yet);
2. if any check fails, cancel with per-item reasons (the same TransactionCanceledException);
3. otherwise apply all writes; if applying fails (e.g. item too large) undo the writes already made,
   items and stream records both, and re-raise.

Second, a Query on a table's key (not an index) looks only at the queried partition. Stock moto
sorts every item of the table for each Query, so a query's cost grows with the whole table (every
execution of every test) instead of with its partition, as on DynamoDB (measured: 150 ms per Query
with a few thousand events stored). Results are unchanged: the same items in the same order.

Third, it refuses what AWS refuses, because code that only ever ran against a lenient moto breaks
on first contact with DynamoDB:

- Transaction conflicts. A TransactWriteItems holds its items' keys from start to finish; another
  transaction touching one of them is cancelled with `TransactionConflict` on that item (`None` on
  the others) even when every condition holds, and a PutItem/UpdateItem/DeleteItem on a held item
  fails with TransactionConflictException. The backend work itself is serialised by one lock (moto
  is not thread-safe), single-item writes included; a transaction waiting for it keeps its keys,
  and yields to other requests once it has them, so overlapping transactions really overlap.
- Transaction limits: at most 100 items and 4 MB in aggregate (ValidationException).
- Values, on every write (PutItem, UpdateItem, DeleteItem, BatchWriteItem, TransactWriteItems):
  numbers of at most 38 significant digits within 1e-130..1e126 in magnitude, M/L nested at most
  32 levels deep (ValidationException, with AWS's messages).

Test switch: conflicts that timing alone provokes rarely can be forced through a control endpoint
on the same port. Every answer is JSON; a bad rule gets 400 {"message": ...}.

    POST   /_strict/conflicts            {"rules": [RULE, ...]} (or a bare list): replaces all rules
    GET    /_strict/conflicts            {"rules": [RULE with "id" and counters, ...],
                                          "forced_conflicts": n, "natural_conflicts": n,
                                          "single_write_conflicts": n, "held_keys": n}
    DELETE /_strict/conflicts            drops all rules; answers like GET
    POST   /_strict/conflicts/rules      RULE: adds one, answers it with its "id" (e.g. "r3"), so
                                          several tests' rules coexist
    GET    /_strict/conflicts/rules/ID   the rule with its counters (404 if unknown)
    DELETE /_strict/conflicts/rules/ID   removes it, answers its final counters (404 if unknown)

    RULE = {"key_contains": "tenant-abc#BUDGET",  # required: substring of a key attribute's value
            "table": "name",                      # only this table (default: any)
            "probability": 0.5,                   # chance to cancel a matching transaction (1.0)
            "count": 40,                          # at most this many forced conflicts (unlimited)
            "seed": 7,                            # seeds the rule's RNG (default: unseeded)
            "hold_ms": 0,                         # see below (default 0)
            "single_writes": false}               # also PutItem/UpdateItem/DeleteItem (false)

A forced conflict cancels the transaction with `TransactionConflict` on every matching item.
With `single_writes`, a matching PutItem, UpdateItem or DeleteItem is refused the way AWS refuses
one on an item a transaction holds (TransactionConflictException), or held `hold_ms` first.
`hold_ms`: a matching transaction that is not cancelled keeps its keys that long before doing its
work (outside the backend lock), so tests can act while it is in flight, e.g. see a PutItem on the
item refused; with `probability` 0 a rule only holds. Counters: `matched` (transactions touching a
matching key), `forced`, `held` (holds begun: poll it to know the keys are taken). At start-up,
MOTO_FORCE_CONFLICTS='[RULE, ...]' installs rules (invalid rules stop the launcher).

Everything else is moto unchanged. Used by scripts/local-stack.sh; see docs/adr/0003-moto-transactions.md.
Tests: python3 -m unittest discover -s scripts/tests -v
"""

import base64
import copy
import functools
import inspect
import io
import itertools
import json
import os
import random
import sys
import threading
import time
import uuid
from decimal import Decimal, InvalidOperation
from typing import NamedTuple

from moto.dynamodb.comparisons import get_filter_expression
from moto.dynamodb.exceptions import (
    ERROR_TYPE_PREFIX,
    ConditionalCheckFailed,
    DynamodbException,
    MockValidationException,
    MultipleTransactionsException,
    TransactionCanceledException,
    TransactWriteSingleOpException,
)
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.table import Table
from moto.dynamodb.responses import DynamoHandler
from moto.moto_server.werkzeug_app import DomainDispatcherApplication
from werkzeug.wrappers import Request, Response

# ---------------------------------------------------------------------------------------------
# Shared state
# ---------------------------------------------------------------------------------------------

# moto's backend is not thread-safe: transactions and single-item writes do their backend work
# under this lock. Re-entrant, so that a locked path calling another cannot deadlock itself.
_LOCK = threading.RLock()
# Guards the bookkeeping below. Held only for that bookkeeping, never while waiting or working.
_STATE = threading.Lock()
_HELD: set = set()  # markers (see _marker) of the items held by in-flight transactions
_RULES: dict = {}  # rule id -> _Rule, in insertion order
_RULE_IDS = itertools.count(1)
_STATS = {"natural_conflicts": 0, "single_write_conflicts": 0}

_OPS = {"ConditionCheck", "Put", "Delete", "Update"}
_ONGOING = "Transaction is ongoing for the item"
_MAX_TRANSACTION_ITEMS = 100
_MAX_TRANSACTION_BYTES = 4 * 1024 * 1024
_TOO_MANY_ITEMS = (
    "1 validation error detected at 'transactItems' failed to satisfy constraint: "
    "Member must have length less than or equal to 100"
)
_TOO_LARGE = "Transaction request cannot be larger than 4 MB"


class TransactionConflictException(DynamodbException):
    """What AWS answers a single-item write on an item an in-flight transaction holds."""

    error_type = ERROR_TYPE_PREFIX + "TransactionConflictException"

    def __init__(self) -> None:
        super().__init__(self.error_type, _ONGOING)


# ---------------------------------------------------------------------------------------------
# TransactWriteItems: limits, keys, conflicts, check-then-apply
# ---------------------------------------------------------------------------------------------


class _Op(NamedTuple):
    kind: str  # Put, Update, Delete or ConditionCheck
    request: dict  # the action's parameters
    key: dict | None  # the item's key; None if it could not be found
    marker: tuple | None  # identifies the item across requests; None with the key
    error: Exception | None  # why the key could not be found, reported on this item


def _check_limits(transact_items):
    """DynamoDB validates the request as a whole before touching any item."""
    if len(transact_items) > _MAX_TRANSACTION_ITEMS:
        raise MockValidationException(_TOO_MANY_ITEMS)
    size = sum(_action_size(next(iter(item.values()), {})) for item in transact_items)
    if size > _MAX_TRANSACTION_BYTES:
        raise MockValidationException(_TOO_LARGE)


def _action_size(request):
    """A transaction action's share of the 4 MB: its item (Put) or key (others), plus the values
    its expressions bring in (an Update's new values are only known through them)."""
    size = _attributes_size(request.get("Item") or request.get("Key") or {})
    values = request.get("ExpressionAttributeValues") or {}
    return size + sum(_value_size(value) for value in values.values())


def _attributes_size(attributes):
    return sum(len(name.encode("utf-8")) + _value_size(value) for name, value in attributes.items())


def _value_size(value):
    """DynamoDB's documented item-size rules, approximately: strings count their UTF-8 bytes,
    binaries their bytes, numbers 1 byte per 2 significant digits plus 1, booleans and nulls 1,
    sets the sum of their members, and a map or list 3 bytes plus 1 per element on top of its
    elements (a map's element also counts its name)."""
    if not isinstance(value, dict) or len(value) != 1:
        return 0  # malformed: moto's own validation answers
    ((kind, raw),) = value.items()
    if kind == "S":
        return len(raw.encode("utf-8"))
    if kind == "N":
        return (_significant_digits(raw) + 1) // 2 + 1
    if kind == "B":
        return _binary_size(raw)
    if kind in ("SS", "NS", "BS"):
        return sum(_value_size({kind[0]: member}) for member in raw)
    if kind == "M":
        return 3 + sum(len(name.encode("utf-8")) + _value_size(v) + 1 for name, v in raw.items())
    if kind == "L":
        return 3 + sum(_value_size(v) + 1 for v in raw)
    return 1  # BOOL, NULL


def _binary_size(raw):
    if isinstance(raw, (bytes, bytearray)):
        return len(raw)
    try:  # still base64 text
        return len(base64.b64decode(raw))
    except (ValueError, TypeError):
        return len(str(raw))


def _key(backend, kind, request):
    if kind not in _OPS:
        raise ValueError("Unsupported transaction operation")
    if kind != "Put":
        return request["Key"]
    attrs = request["Item"]
    table = backend.get_table(request["TableName"])
    key = {table.hash_key_attr: attrs[table.hash_key_attr]}
    if table.range_key_attr is not None:
        key[table.range_key_attr] = attrs[table.range_key_attr]
    return key


def _marker(backend, table_name, key):
    """The same item gives the same marker whichever request names it (1 and 1.0 alike)."""
    parts = []
    for name, value in sorted(key.items()):
        ((kind, raw),) = value.items()
        parts.append((name, kind, Decimal(raw) if kind == "N" else _hashable(raw)))
    return backend.account_id, backend.region_name, str(table_name), tuple(parts)


def _hashable(raw):
    return raw if isinstance(raw, (str, bytes)) else repr(raw)


def _plan(backend, transact_items):
    """Finds every action's item; raises the request-level ValidationExceptions."""
    ops, seen = [], set()
    for item in transact_items:
        if len(item) > 1:
            raise TransactWriteSingleOpException
        kind, request = next(iter(item.items()))
        try:
            key = _key(backend, kind, request)
            marker = _marker(backend, request["TableName"], key)
        except MockValidationException:
            raise
        except Exception as e:  # noqa: BLE001 - reported per item by _check, as moto does
            ops.append(_Op(kind, request, None, None, e))
            continue
        if marker in seen:
            raise MultipleTransactionsException()
        seen.add(marker)
        ops.append(_Op(kind, request, key, marker, None))
    return ops


def _conflict(ops, indexes):
    """Cancels a transaction the way AWS does when other requests hold some of its items."""
    reasons = [("TransactionConflict", _ONGOING, None) if i in indexes else (None, None, None)
               for i in range(len(ops))]
    return TransactionCanceledException(reasons)


def _register(ops):
    """Takes every item's key for this transaction, or none: returns the indexes of the items
    another in-flight transaction holds (empty when the keys are now ours)."""
    markers = [op.marker for op in ops if op.marker is not None]
    with _STATE:
        busy = {i for i, op in enumerate(ops) if op.marker in _HELD}
        if busy:
            _STATS["natural_conflicts"] += 1
        else:
            _HELD.update(markers)
        return busy


def _release(ops):
    with _STATE:
        _HELD.difference_update(op.marker for op in ops if op.marker is not None)


def _in_flight(seconds, holders):
    """Lets other requests run while this transaction holds its keys, outside the backend lock.

    Without the hold_ms test switch it only yields the GIL (sleep(0)): a transaction otherwise
    usually completes within one interpreter time slice, so overlapping transactions, everyday
    on AWS where a transaction lasts a network round-trip, would almost never be seen here
    (measured, two threads on one item: 0 or 1 conflict per 400-800 transactions without it,
    about one in ten with it)."""
    if holders:
        with _STATE:
            for rule in holders:
                rule.held += 1
    time.sleep(seconds)


def _check(backend, ops):
    """Phase 1: evaluate every condition; returns the per-item errors (code, message, item)."""
    errors = []
    for op in ops:
        original = None
        try:
            if op.error is not None:
                raise op.error
            current = backend.get_item(op.request["TableName"], op.key)
            condition = op.request.get("ConditionExpression")
            if condition is not None:
                expr = get_filter_expression(
                    condition,
                    op.request.get("ExpressionAttributeNames"),
                    op.request.get("ExpressionAttributeValues"),
                )
                if not expr.expr(current):
                    if op.request.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                        original = current.to_json()["Attributes"]
                    raise ConditionalCheckFailed(item=original)
            errors.append((None, None, None))
        except MockValidationException:
            raise
        except ConditionalCheckFailed as e:
            errors.append(("ConditionalCheckFailed", str(e.message), original))
        except Exception as e:  # noqa: BLE001 - reported per item, as moto does
            errors.append((type(e).__name__, str(e), original))
    return errors


def _apply(backend, ops):
    """Phase 2: write; on failure undo written items and their stream records.

    Calls the backend directly, so the single-item-write guard (which sits on the HTTP handlers)
    never sees the transaction's own writes."""
    undo = []  # (table, key, previous item or None)
    shard_lengths = {}
    try:
        for op in ops:
            name, request = op.request["TableName"], op.request
            table = backend.get_table(name)
            if table.stream_shard is not None and name not in shard_lengths:
                shard_lengths[name] = len(table.stream_shard.items)
            if op.kind == "ConditionCheck":
                continue
            previous = backend.get_item(name, op.key)
            undo.append((table, op.key, copy.deepcopy(previous)))
            names, values = request.get("ExpressionAttributeNames"), request.get("ExpressionAttributeValues")
            if op.kind == "Put":
                backend.put_item(name, request["Item"], expression_attribute_names=names,
                                 expression_attribute_values=values)
            elif op.kind == "Delete":
                backend.delete_item(name, op.key, expression_attribute_names=names,
                                    expression_attribute_values=values)
            else:
                backend.update_item(name, op.key, update_expression=request["UpdateExpression"],
                                    expression_attribute_names=names,
                                    expression_attribute_values=values)
    except Exception:
        for table, key, previous in reversed(undo):
            hash_value, range_value = backend.get_keys_value(table, key)
            if previous is None:
                if table.get_item(hash_value, range_value) is not None:
                    table.delete_item(hash_value, range_value)
            else:
                table.put_item(previous.to_json()["Attributes"])
        for name, length in shard_lengths.items():
            shard = backend.get_table(name).stream_shard
            del shard.items[length:]
        raise


def transact_write_items(self, transact_items):
    _check_limits(transact_items)
    ops = _plan(self, transact_items)
    forced, hold_seconds, holders = _consult_rules(ops)
    if forced:
        raise _conflict(ops, forced)
    busy = _register(ops)
    if busy:
        raise _conflict(ops, busy)
    try:
        _in_flight(hold_seconds, holders)
        with _LOCK:
            errors = _check(self, ops)
            if any(code is not None for code, _, _ in errors):
                raise TransactionCanceledException(errors)
            _apply(self, ops)
    finally:
        _release(ops)


DynamoDBBackend.transact_write_items = transact_write_items

# ---------------------------------------------------------------------------------------------
# Single-item writes on items held by a transaction
# ---------------------------------------------------------------------------------------------


def _held_by_transaction(backend, body):
    try:
        kind = "Put" if "Item" in body else "Update"
        marker = _marker(backend, body["TableName"], _key(backend, kind, body))
    except Exception:  # noqa: BLE001 - a malformed request: moto's own validation answers
        return False
    with _STATE:
        return marker in _HELD


def _guard_single_write(handler):
    """Wraps moto's PutItem/UpdateItem/DeleteItem handler. The HTTP handler rather than the
    backend method, because BatchWriteItem and the transaction's own _apply call the backend too
    and must not be refused."""

    @functools.wraps(handler)
    def guarded(self):
        forced, hold_seconds = _consult_single_write_rules(self.dynamodb_backend, self.body)
        if forced:
            raise TransactionConflictException()
        time.sleep(hold_seconds)
        with _LOCK:
            if _held_by_transaction(self.dynamodb_backend, self.body):
                with _STATE:
                    _STATS["single_write_conflicts"] += 1
                raise TransactionConflictException()
            return handler(self)

    return guarded


for _name in ("put_item", "update_item", "delete_item"):
    setattr(DynamoHandler, _name, _guard_single_write(getattr(DynamoHandler, _name)))

# ---------------------------------------------------------------------------------------------
# A Query of an index the table does not have
# ---------------------------------------------------------------------------------------------

_moto_get_schema = DynamoDBBackend.get_schema


def get_schema(self, table_name, index_name):
    """AWS answers ValidationException "The table does not have the specified index: <name>";
    moto answers ResourceNotFoundException, which reads as a missing table. Code that falls back
    while a migration builds an index must see what AWS sends."""
    if index_name:
        table = self.get_table(table_name)
        names = {i.name for i in (table.global_indexes or []) + (table.indexes or [])}
        if index_name not in names:
            raise MockValidationException(
                f"The table does not have the specified index: {index_name}")
    return _moto_get_schema(self, table_name, index_name)


DynamoDBBackend.get_schema = get_schema

# ---------------------------------------------------------------------------------------------
# Forced conflicts (test switch)
# ---------------------------------------------------------------------------------------------


class _BadRequest(ValueError):
    pass


class _Rule:
    """Cancels (or holds) transactions that touch an item whose key contains a substring."""

    FIELDS = {"key_contains", "table", "probability", "count", "seed", "hold_ms", "single_writes"}

    def __init__(self, rule_id, spec):
        if not isinstance(spec, dict):
            raise _BadRequest("a rule is a JSON object")
        unknown = set(spec) - self.FIELDS
        if unknown:
            raise _BadRequest(f"unknown rule field(s): {', '.join(sorted(unknown))}")
        self.id = rule_id
        self.key_contains = spec.get("key_contains")
        if not isinstance(self.key_contains, str) or not self.key_contains:
            raise _BadRequest("key_contains must be a non-empty string")
        self.table = spec.get("table")
        if self.table is not None and not isinstance(self.table, str):
            raise _BadRequest("table must be a string")
        self.probability = _number(spec, "probability", 1.0, 0.0, 1.0)
        self.count = spec.get("count")
        if self.count is not None and (not isinstance(self.count, int) or isinstance(self.count, bool)
                                       or self.count < 0):
            raise _BadRequest("count must be a non-negative integer")
        self.hold_ms = _number(spec, "hold_ms", 0, 0, 60_000)
        self.single_writes = spec.get("single_writes", False)
        if not isinstance(self.single_writes, bool):
            raise _BadRequest("single_writes must be true or false")
        self.seed = spec.get("seed")
        # Unseeded unless asked: a seed makes a probabilistic rule repeatable.
        self.rng = random.Random(self.seed) if self.seed is not None else random.Random()
        self.matched = self.forced = self.held = 0

    def matches(self, table_name, key_texts):
        if self.table is not None and table_name != self.table:
            return False
        return any(self.key_contains in text for text in key_texts)

    def fires(self):
        if self.count is not None and self.forced >= self.count:
            return False
        return self.rng.random() < self.probability

    def view(self):
        return {"id": self.id, "key_contains": self.key_contains, "table": self.table,
                "probability": self.probability, "count": self.count, "seed": self.seed,
                "hold_ms": self.hold_ms, "single_writes": self.single_writes,
                "matched": self.matched, "forced": self.forced,
                "held": self.held}


def _number(spec, field, default, low, high):
    value = spec.get(field, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise _BadRequest(f"{field} must be a number from {low} to {high}")
    return value


def _key_texts(key):
    """The string form of each key attribute's value, which rules match against."""
    texts = []
    for value in key.values():
        raw = next(iter(value.values()))
        texts.append(raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw))
    return texts


def _consult_rules(ops):
    """Returns (indexes of the items to cancel with a forced conflict, seconds to hold the keys,
    the rules asking for that hold)."""
    touched = [(i, op.request["TableName"], _key_texts(op.key)) for i, op in enumerate(ops)
               if op.key is not None]
    forced, hold_ms, holders = set(), 0, []
    with _STATE:
        for rule in _RULES.values():
            hits = {i for i, table_name, texts in touched if rule.matches(table_name, texts)}
            if not hits:
                continue
            rule.matched += 1
            if rule.fires():
                rule.forced += 1
                forced |= hits
            elif rule.hold_ms:
                hold_ms = max(hold_ms, rule.hold_ms)
                holders.append(rule)
    if forced:
        return forced, 0, []
    return forced, hold_ms / 1000, holders


def _consult_single_write_rules(backend, body):
    """For a PutItem/UpdateItem/DeleteItem: (refuse it with a forced conflict?, seconds to hold)."""
    if not any(rule.single_writes for rule in _RULES.values()):
        return False, 0
    try:
        kind = "Put" if "Item" in body else "Update"
        table_name = body["TableName"]
        texts = _key_texts(_key(backend, kind, body))
    except Exception:  # noqa: BLE001 - a malformed request: moto's own validation answers
        return False, 0
    hold_ms = 0
    with _STATE:
        for rule in _RULES.values():
            if not rule.single_writes or not rule.matches(table_name, texts):
                continue
            rule.matched += 1
            if rule.fires():
                rule.forced += 1
                return True, 0
            if rule.hold_ms:
                rule.held += 1
                hold_ms = max(hold_ms, rule.hold_ms)
    return False, hold_ms / 1000


def _new_rule(spec):
    return _Rule(f"r{next(_RULE_IDS)}", spec)


def _replace_rules(payload):
    specs = payload.get("rules") if isinstance(payload, dict) else payload
    if not isinstance(specs, list):
        raise _BadRequest('expected {"rules": [...]} or a list of rules')
    rules = [_new_rule(spec) for spec in specs]  # all valid, or nothing changes
    with _STATE:
        _RULES.clear()
        _RULES.update((rule.id, rule) for rule in rules)
    return _snapshot()


def _add_rule(spec):
    rule = _new_rule(spec)
    with _STATE:
        _RULES[rule.id] = rule
        return rule.view()


def _rule_view(rule_id, remove=False):
    with _STATE:
        rule = _RULES.pop(rule_id, None) if remove else _RULES.get(rule_id)
        return None if rule is None else rule.view()


def _snapshot():
    with _STATE:
        rules = [rule.view() for rule in _RULES.values()]
        return {"rules": rules, "forced_conflicts": sum(r["forced"] for r in rules),
                "held_keys": len(_HELD), **_STATS}


def _control_route(method, path, body):
    """(status, JSON payload) for a /_strict/... request."""
    parts = path.strip("/").split("/")
    if parts == ["_strict", "conflicts"]:
        if method == "GET":
            return 200, _snapshot()
        if method == "POST":
            return 200, _replace_rules(_json(body))
        if method == "DELETE":
            return 200, _replace_rules([])
    elif parts == ["_strict", "conflicts", "rules"]:
        if method == "POST":
            return 200, _add_rule(_json(body))
    elif len(parts) == 4 and parts[:3] == ["_strict", "conflicts", "rules"]:
        if method in ("GET", "DELETE"):
            view = _rule_view(parts[3], remove=method == "DELETE")
            return (200, view) if view is not None else (404, {"message": f"no rule {parts[3]}"})
    else:
        return 404, {"message": f"unknown path {path}"}
    return 405, {"message": f"{method} not allowed on {path}"}


def _json(body):
    try:
        return json.loads(body or b"null")
    except ValueError as e:
        raise _BadRequest(f"invalid JSON: {e}") from None


def _control(environ, start_response):
    request = Request(environ)
    try:
        status, payload = _control_route(request.method, request.path, request.get_data())
    except _BadRequest as e:
        status, payload = 400, {"message": str(e)}
    return Response(json.dumps(payload), status=status, mimetype="application/json")(environ, start_response)


def _load_startup_rules():
    text = os.environ.get("MOTO_FORCE_CONFLICTS", "").strip()
    if text:
        try:
            _replace_rules(_json(text))
        except _BadRequest as e:
            sys.exit(f"MOTO_FORCE_CONFLICTS: {e}")


# ---------------------------------------------------------------------------------------------
# Numbers and nesting, at the HTTP level so every write path is covered the same way
# ---------------------------------------------------------------------------------------------

_WRITE_TARGETS = {f"DynamoDB_20120810.{op}" for op in
                  ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems")}
# Request fields holding {attribute name: AttributeValue}, wherever they appear in a request
# (top level, TransactItems[].Put, RequestItems.<table>[].PutRequest, ...).
_ATTRIBUTE_MAPS = {"Item", "Key", "ExpressionAttributeValues"}
_MAX_DIGITS = 38
_MAX_NESTING = 32
_TOO_MANY_DIGITS = "Attempting to store more than 38 significant digits in a Number"
_OVERFLOW = "Number overflow. Attempting to store a number with magnitude larger than supported range"
_UNDERFLOW = "Number underflow. Attempting to store a number with magnitude smaller than supported range"
_TOO_DEEP = "Nesting Levels have exceeded supported limits"
_LARGEST = Decimal("1e126")
_SMALLEST = Decimal("1e-130")


def _significant_digits(text):
    """Digits DynamoDB stores: leading and trailing zeros are not significant (1000 and 0.001
    both have one). 0 for anything that is not a finite number."""
    try:
        number = Decimal(text)
    except (InvalidOperation, TypeError, ValueError):
        return 0
    if not number.is_finite():
        return 0
    return len("".join(map(str, number.as_tuple().digits)).strip("0"))


def _number_problem(text):
    try:
        number = Decimal(text)
    except (InvalidOperation, TypeError, ValueError):
        return None  # not a number: moto's own validation answers
    if not number.is_finite():
        return None
    if _significant_digits(text) > _MAX_DIGITS:
        return _TOO_MANY_DIGITS
    magnitude = number.copy_abs()  # exact, unlike abs(), which rounds to the context precision
    if magnitude >= _LARGEST:
        return _OVERFLOW
    if magnitude and magnitude < _SMALLEST:
        return _UNDERFLOW
    return None


def _value_problem(value, depth=0):
    """First problem in an AttributeValue. `depth` counts the maps and lists around it: a
    top-level attribute that is a map is level 1, a map inside it level 2, ... up to 32."""
    if not isinstance(value, dict) or len(value) != 1:
        return None  # malformed: moto's own validation answers
    ((kind, raw),) = value.items()
    if kind == "N":
        return _number_problem(raw)
    if kind == "NS" and isinstance(raw, list):
        return _first(_number_problem(member) for member in raw)
    if kind in ("M", "L"):
        if depth + 1 > _MAX_NESTING:
            return _TOO_DEEP
        children = raw.values() if isinstance(raw, dict) else raw if isinstance(raw, list) else []
        return _first(_value_problem(child, depth + 1) for child in children)
    return None


def _request_problem(node):
    """First number or nesting problem in any attribute map of a write request."""
    if isinstance(node, list):
        return _first(_request_problem(child) for child in node)
    if not isinstance(node, dict):
        return None
    for field, child in node.items():
        if field in _ATTRIBUTE_MAPS and isinstance(child, dict):
            problem = _first(_value_problem(value) for value in child.values())
        elif field == "AttributeUpdates" and isinstance(child, dict):  # legacy UpdateItem
            problem = _first(_value_problem(u.get("Value")) for u in child.values() if isinstance(u, dict))
        else:
            problem = _request_problem(child)
        if problem:
            return problem
    return None


def _first(problems):
    return next((p for p in problems if p), None)


def _write_problem(environ):
    """The ValidationException message DynamoDB would answer this write with, or None."""
    if environ.get("HTTP_X_AMZ_TARGET") not in _WRITE_TARGETS:
        return None
    if environ.get("HTTP_CONTENT_ENCODING", "identity") != "identity":
        return None  # compressed: left to moto
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None
    if length <= 0:
        return None
    body = environ["wsgi.input"].read(length)
    environ["wsgi.input"] = io.BytesIO(body)  # moto reads it again
    try:
        request = json.loads(body)
    except ValueError:
        return None  # malformed JSON: moto answers
    return _request_problem(request)


def _validation_error(message, start_response):
    """A ValidationException as DynamoDB sends it (the SDKs read the code after the `#`)."""
    body = json.dumps({"__type": "com.amazon.coral.validate#ValidationException",
                       "message": message}).encode("utf-8")
    start_response("400 Bad Request", [
        ("Content-Type", "application/x-amz-json-1.0"),
        ("Content-Length", str(len(body))),
        ("x-amzn-RequestId", str(uuid.uuid4())),
    ])
    return [body]


_dispatch = DomainDispatcherApplication.__call__


def _serve(self, environ, start_response):
    """moto's WSGI entry point, with the control endpoint and DynamoDB's value limits in front."""
    if environ.get("PATH_INFO", "").startswith("/_strict/"):
        return _control(environ, start_response)
    problem = _write_problem(environ)
    if problem is not None:
        return _validation_error(problem, start_response)
    return _dispatch(self, environ, start_response)


DomainDispatcherApplication.__call__ = _serve

# ---------------------------------------------------------------------------------------------
# Query: only the queried partition
# ---------------------------------------------------------------------------------------------

_PARTITION = threading.local()
_all_items = Table.all_items
_query = Table.query
_QUERY_SIGNATURE = inspect.signature(_query)


def all_items(self):
    """All items, or only the current Query's partition (sorted by range key, as stock does)."""
    partition = getattr(_PARTITION, "key", None)
    if partition is None or partition[0] is not self:
        return _all_items(self)
    _, hash_key, comparison, objects = partition
    if hash_key not in self.items:  # `in`, not `get`: items is a defaultdict
        return []
    found = self.items[hash_key]
    if not self.range_key_attr:
        return [found]
    items = found.values()
    if comparison:
        # Stock moto sizes every item of the partition before comparing range keys; compare
        # first (the same condition it applies afterwards) so a tail read costs the tail.
        items = [i for i in items if i.range_key is not None and i.range_key.compare(comparison, objects)]
    return sorted(items, key=lambda item: item.range_key)


def query(self, *args, **kwargs):
    arguments = _QUERY_SIGNATURE.bind(self, *args, **kwargs).arguments
    if arguments.get("index_name") is not None or arguments.get("hash_key") is None:
        return _query(self, *args, **kwargs)
    _PARTITION.key = (
        self,
        arguments["hash_key"],
        arguments.get("range_comparison"),
        arguments.get("range_objs") or [],
    )
    try:
        return _query(self, *args, **kwargs)
    finally:
        _PARTITION.key = None


Table.all_items = all_items
Table.query = query

# ---------------------------------------------------------------------------------------------
# Persistence (MOTO_STATE_FILE): the local product keeps its data across restarts
# ---------------------------------------------------------------------------------------------
# moto keeps everything in memory. With MOTO_STATE_FILE set (scripts/start sets it), the
# DynamoDB, Secrets Manager and SQS backends are pickled to that file within a couple of seconds
# of any change and when the server is stopped, and loaded back at start: stopping or crashing the
# local product loses at most the last moments of writes, not the workflows, executions and users.

_STATE_FILE = os.environ.get("MOTO_STATE_FILE")
_DIRTY = threading.Event()
_SAVING = threading.Lock()  # one save at a time: the saver thread and the exit save
_SAVE_EVERY_SECONDS = 1.0
# Calls that change nothing do not mark the state dirty (every AWS JSON call is a POST).
_READS = ("Get", "Describe", "List", "Query", "Scan", "BatchGet", "TransactGet", "Receive")


def _persisted_backends():
    from moto.dynamodb.models import dynamodb_backends
    from moto.secretsmanager.models import secretsmanager_backends
    from moto.sqs.models import sqs_backends

    return {"dynamodb": dynamodb_backends, "secretsmanager": secretsmanager_backends, "sqs": sqs_backends}


def _register_lock_reducers():
    """Backends hold locks, which pickle cannot store: a restored backend gets fresh ones."""
    import copyreg

    copyreg.pickle(type(threading.Lock()), lambda _: (threading.Lock, ()))
    copyreg.pickle(type(threading.RLock()), lambda _: (threading.RLock, ()))
    copyreg.pickle(threading.Condition, lambda _: (threading.Condition, ()))
    copyreg.pickle(threading.Event, lambda _: (threading.Event, ()))


def _save_state():
    import pickle
    import tempfile

    with _SAVING:
        with _LOCK:
            _DIRTY.clear()
            state = {
                name: {account: dict(regions) for account, regions in backends.items()}
                for name, backends in _persisted_backends().items()
            }
            data = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        folder = os.path.dirname(os.path.abspath(_STATE_FILE))
        descriptor, temporary = tempfile.mkstemp(prefix=".moto-state-", dir=folder)
        with os.fdopen(descriptor, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, _STATE_FILE)  # atomic: a crash mid-write keeps the previous state


def _save_at_exit():
    try:
        _save_state()
    except Exception as e:  # noqa: BLE001 - the periodic save before it is what is kept
        print(f"moto: state not saved at exit ({e})", file=sys.stderr)


def _load_state():
    import pickle

    if not os.path.exists(_STATE_FILE):
        return
    try:
        with open(_STATE_FILE, "rb") as stored:
            state = pickle.load(stored)
    except Exception as e:  # noqa: BLE001 - an unreadable file must not keep moto down
        aside = f"{_STATE_FILE}.unreadable-{int(time.time())}"
        os.replace(_STATE_FILE, aside)
        print(f"moto: {_STATE_FILE} could not be read ({e}); moved to {aside}, starting empty",
              file=sys.stderr)
        return
    for name, backends in _persisted_backends().items():
        for account, regions in state.get(name, {}).items():
            for region, backend in regions.items():
                backends[account][region] = backend
    print(f"moto: state loaded from {_STATE_FILE}", file=sys.stderr)


def _saver():
    while True:
        _DIRTY.wait()
        time.sleep(_SAVE_EVERY_SECONDS)
        try:
            _save_state()
        except Exception as e:  # noqa: BLE001 - a backend changed mid-copy: try again next round
            _DIRTY.set()
            print(f"moto: state not saved yet ({e})", file=sys.stderr)


def _serve_and_mark(self, environ, start_response):
    if environ.get("REQUEST_METHOD") not in ("GET", "HEAD", "OPTIONS"):
        action = environ.get("HTTP_X_AMZ_TARGET", "").rpartition(".")[2]
        if not action.startswith(_READS):
            _DIRTY.set()
    return _serve(self, environ, start_response)


def _enable_persistence():
    import atexit

    _register_lock_reducers()
    _load_state()
    DomainDispatcherApplication.__call__ = _serve_and_mark
    threading.Thread(target=_saver, name="moto-state-saver", daemon=True).start()
    # moto's server turns SIGTERM and SIGINT into a normal exit, which runs this.
    atexit.register(_save_at_exit)


if __name__ == "__main__":
    from moto.server import main

    _load_startup_rules()
    if _STATE_FILE:
        _enable_persistence()
    sys.exit(main(sys.argv[1:]))
