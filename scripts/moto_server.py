"""moto server with DynamoDB transactions made cheap and atomic.

moto 5 backs up every table a TransactWriteItems touches with copy.deepcopy, once per item in the
transaction, so one append costs O(items x table size, stream records included) and the local stack
slows down as it fills (measured: 0.1 s for the first 100-event append, 2 s by the fifth).
This launcher replaces that one method with DynamoDB's own semantics, which keeps the cost per
transaction independent of table size:

1. check every item's condition against the current state (nothing written yet);
2. if any check fails, cancel with per-item reasons (the same TransactionCanceledException);
3. otherwise apply all writes; if applying fails (e.g. item too large) undo the writes already made,
   items and stream records both, and re-raise.

A process-wide lock makes each transaction atomic with respect to other transactions, as on AWS.

Second, a Query on a table's key (not an index) looks only at the queried partition. Stock moto
sorts every item of the table for each Query, so a query's cost grows with the whole table (every
execution of every test) instead of with its partition, as on DynamoDB (measured: 150 ms per Query
with a few thousand events stored). Results are unchanged: the same items in the same order.

Everything else is moto unchanged. Used by scripts/local-stack.sh; see docs/adr/0003-moto-transactions.md.
"""

import copy
import inspect
import sys
import threading

from moto.dynamodb.comparisons import get_filter_expression
from moto.dynamodb.exceptions import (
    ConditionalCheckFailed,
    MockValidationException,
    MultipleTransactionsException,
    TooManyTransactionsException,
    TransactionCanceledException,
    TransactWriteSingleOpException,
)
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.table import Table

_LOCK = threading.RLock()
_OPS = {"ConditionCheck", "Put", "Delete", "Update"}


def _key(backend, op_type, op):
    if op_type == "Put":
        attrs = op["Item"]
        table = backend.get_table(op["TableName"])
        key = {table.hash_key_attr: attrs[table.hash_key_attr]}
        if table.range_key_attr is not None:
            key[table.range_key_attr] = attrs[table.range_key_attr]
        return key
    return op["Key"]


def _check(backend, transact_items):
    """Phase 1: evaluate every condition; returns (errors, planned ops)."""
    seen = set()
    errors, planned = [], []
    for item in transact_items:
        if len(item) > 1:
            raise TransactWriteSingleOpException
        op_type, op = next(iter(item.items()))
        original = None
        try:
            if op_type not in _OPS:
                raise ValueError("Unsupported transaction operation")
            key = _key(backend, op_type, op)
            marker = (str(op["TableName"]), str(dict(sorted(key.items()))))
            if marker in seen:
                raise MultipleTransactionsException()
            seen.add(marker)
            current = backend.get_item(op["TableName"], key)
            condition = op.get("ConditionExpression")
            if condition is not None:
                expr = get_filter_expression(
                    condition, op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
                )
                if not expr.expr(current):
                    if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                        original = current.to_json()["Attributes"]
                    raise ConditionalCheckFailed(item=original)
            errors.append((None, None, None))
            planned.append((op_type, op, key))
        except MockValidationException:
            raise
        except ConditionalCheckFailed as e:
            errors.append(("ConditionalCheckFailed", str(e.message), original))
        except Exception as e:  # noqa: BLE001 - reported per item, as moto does
            errors.append((type(e).__name__, str(e), original))
    return errors, planned


def _apply(backend, planned):
    """Phase 2: write; on failure undo written items and their stream records."""
    undo = []  # (table, key, previous item or None)
    shard_lengths = {}
    try:
        for op_type, op, key in planned:
            name = op["TableName"]
            table = backend.get_table(name)
            if table.stream_shard is not None and name not in shard_lengths:
                shard_lengths[name] = len(table.stream_shard.items)
            if op_type == "ConditionCheck":
                continue
            previous = backend.get_item(name, key)
            undo.append((table, key, copy.deepcopy(previous)))
            names, values = op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
            if op_type == "Put":
                backend.put_item(name, op["Item"], expression_attribute_names=names,
                                 expression_attribute_values=values)
            elif op_type == "Delete":
                backend.delete_item(name, key, expression_attribute_names=names,
                                    expression_attribute_values=values)
            else:
                backend.update_item(name, key, update_expression=op["UpdateExpression"],
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
    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    with _LOCK:
        errors, planned = _check(self, transact_items)
        if any(code is not None for code, _, _ in errors):
            raise TransactionCanceledException(errors)
        _apply(self, planned)


DynamoDBBackend.transact_write_items = transact_write_items

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

if __name__ == "__main__":
    from moto.server import main

    sys.exit(main(sys.argv[1:]))
