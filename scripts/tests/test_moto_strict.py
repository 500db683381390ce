"""Tests for scripts/moto_server.py: moto made as strict as DynamoDB.

Each test class starts the launcher on a free port (python3 scripts/moto_server.py -H 127.0.0.1
-p PORT) and talks to it with boto3, as the Rust SDK would. Every test uses its own keys, so
rules and items of one test never touch another's.

    python3 -m unittest discover -s scripts/tests -v
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

LAUNCHER = Path(__file__).resolve().parents[1] / "moto_server.py"
TABLE = "strict"
ONGOING = "Transaction is ongoing for the item"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """The launcher in a subprocess, answering on a free port."""

    def __init__(self, env=None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [sys.executable, str(LAUNCHER), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
        )

    def wait_ready(self, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"launcher exited ({self.process.returncode}):\n{self.output()}")
            try:
                with urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"launcher did not answer within {timeout} s:\n{self.output()}")

    def output(self):
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")[-4000:]

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()

    def control(self, method, path, payload=None):
        """(status, JSON body) of a request to the /_strict control endpoint."""
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def client(self, service="dynamodb"):
        return boto3.client(
            service, endpoint_url=self.url, region_name="us-east-1",
            aws_access_key_id="test", aws_secret_access_key="test",
            # No SDK retries: the tests count every cancellation themselves.
            config=Config(retries={"total_max_attempts": 1}, max_pool_connections=4),
        )


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def key(pk, sk="item"):
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def increment(pk, sk="item", table=TABLE):
    """A transaction action whose condition holds whenever the item exists."""
    return {"Update": {"TableName": table, "Key": key(pk, sk), "UpdateExpression": "ADD n :one",
                       "ConditionExpression": "attribute_exists(pk)",
                       "ExpressionAttributeValues": {":one": {"N": "1"}}}}


def put(pk, sk="item", **attributes):
    return {"Put": {"TableName": TABLE, "Item": {**key(pk, sk), **attributes}}}


def reasons(error):
    return [r["Code"] for r in error.response["CancellationReasons"]]


def code(error):
    return error.response["Error"]["Code"]


def create_table(client, name, stream=False, index=False):
    params = {
        "TableName": name,
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"},
                                 {"AttributeName": "sk", "AttributeType": "S"}],
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"},
                      {"AttributeName": "sk", "KeyType": "RANGE"}],
        "BillingMode": "PAY_PER_REQUEST",
    }
    if stream:
        params["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    if index:
        params["AttributeDefinitions"].append({"AttributeName": "g", "AttributeType": "S"})
        params["GlobalSecondaryIndexes"] = [{
            "IndexName": "by-g", "Projection": {"ProjectionType": "ALL"},
            "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"},
                          {"AttributeName": "sk", "KeyType": "RANGE"}],
        }]
    client.create_table(**params)


class StrictServerTest(unittest.TestCase):
    server: Server

    @classmethod
    def setUpClass(cls):
        cls.server = Server().wait_ready()
        cls.db = cls.server.client()
        create_table(cls.db, TABLE, stream=True)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def seed_item(self, pk, sk="item", n=0):
        self.db.put_item(TableName=TABLE, Item={**key(pk, sk), "n": {"N": str(n)}})

    def counter(self, pk, sk="item"):
        item = self.db.get_item(TableName=TABLE, Key=key(pk, sk), ConsistentRead=True).get("Item")
        return None if item is None else int(item["n"]["N"])

    def add_rule(self, rule):
        status, body = self.server.control("POST", "/_strict/conflicts/rules", rule)
        self.assertEqual(status, 200, body)
        self.addCleanup(self.server.control, "DELETE", f"/_strict/conflicts/rules/{body['id']}")
        return body["id"]

    def rule(self, rule_id):
        status, body = self.server.control("GET", f"/_strict/conflicts/rules/{rule_id}")
        self.assertEqual(status, 200, body)
        return body

    def assert_refused(self, call, message, error_code="ValidationException"):
        with self.assertRaises(ClientError) as caught:
            call()
        self.assertEqual(code(caught.exception), error_code)
        self.assertEqual(caught.exception.response["ResponseMetadata"]["HTTPStatusCode"], 400)
        self.assertEqual(caught.exception.response["Error"]["Message"], message)

    # --- per-item transaction locking ---------------------------------------------------------

    def hammer(self, pks, attempts):
        """One thread per pk's list; returns per thread (successes, conflict reason lists)."""
        results = []

        def run(targets):
            db, ok, conflicts = self.server.client(), 0, []
            for i in range(attempts):
                pk = targets[i % len(targets)]
                log = put(unique("log"), "entry")  # a second item: a wider transaction
                try:
                    db.transact_write_items(TransactItems=[increment(pk), log])
                    ok += 1
                except ClientError as e:
                    self.assertEqual(code(e), "TransactionCanceledException", e.response)
                    conflicts.append(reasons(e))
            results.append((ok, conflicts))

        threads = [threading.Thread(target=run, args=(targets,)) for targets in pks]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return results

    def test_concurrent_transactions_on_one_item_conflict_and_lose_nothing(self):
        pk = unique("hot")
        self.seed_item(pk)
        _, before = self.server.control("GET", "/_strict/conflicts")
        ok, conflicts, rounds = 0, [], 0
        # Overlaps are a matter of timing (about one transaction in ten conflicts here): go on,
        # boundedly, until at least one has happened. No hold_ms: these are natural conflicts.
        while not conflicts and rounds < 10:
            rounds += 1
            for thread_ok, thread_conflicts in self.hammer([[pk], [pk]], attempts=40):
                ok += thread_ok
                conflicts += thread_conflicts
        self.assertGreater(len(conflicts), 0, "no natural conflict in 800 overlapping transactions")
        for codes in conflicts:  # the counter is held, the other transaction's log item is not
            self.assertEqual(codes, ["TransactionConflict", "None"])
        self.assertEqual(ok + len(conflicts), rounds * 80)
        self.assertEqual(self.counter(pk), ok)
        _, after = self.server.control("GET", "/_strict/conflicts")
        self.assertGreaterEqual(after["natural_conflicts"] - before["natural_conflicts"], len(conflicts))
        self.assertEqual(after["held_keys"], 0)

    def test_transactions_on_different_items_do_not_conflict(self):
        pks = [unique("cold"), unique("cold")]
        for pk in pks:
            self.seed_item(pk)
        results = self.hammer([[pks[0]], [pks[1]]], attempts=30)
        self.assertEqual([conflicts for _, conflicts in results], [[], []])
        self.assertEqual([self.counter(pk) for pk in pks], [30, 30])

    def test_single_write_on_an_item_held_by_a_transaction_is_refused(self):
        pk, other = unique("held"), unique("free")
        self.seed_item(pk)
        rule_id = self.add_rule({"key_contains": pk, "probability": 0, "hold_ms": 2500})
        outcome = []
        holder = threading.Thread(target=lambda: outcome.append(
            self.server.client().transact_write_items(TransactItems=[increment(pk)])))
        holder.start()
        deadline = time.monotonic() + 5
        while self.rule(rule_id)["held"] < 1:
            self.assertLess(time.monotonic(), deadline, "the transaction never started holding")
            time.sleep(0.02)

        # While it holds the item: single-item writes on it are refused...
        self.assert_refused(lambda: self.db.put_item(TableName=TABLE, Item={**key(pk), "n": {"N": "9"}}),
                            ONGOING, "TransactionConflictException")
        self.assert_refused(lambda: self.db.update_item(
            TableName=TABLE, Key=key(pk), UpdateExpression="SET x = :x",
            ExpressionAttributeValues={":x": {"S": "x"}}), ONGOING, "TransactionConflictException")
        self.assert_refused(lambda: self.db.delete_item(TableName=TABLE, Key=key(pk)),
                            ONGOING, "TransactionConflictException")
        # ...so is another transaction on it, with the reason on that item only...
        with self.assertRaises(ClientError) as caught:
            self.db.transact_write_items(TransactItems=[put(other, "x"), increment(pk)])
        self.assertEqual(reasons(caught.exception), ["None", "TransactionConflict"])
        self.assertEqual(caught.exception.response["CancellationReasons"][1]["Message"], ONGOING)
        # ...and other items are not blocked by a transaction waiting with its keys.
        self.db.put_item(TableName=TABLE, Item={**key(other), "n": {"N": "1"}})

        holder.join()
        self.assertEqual(len(outcome), 1, "the holding transaction failed")
        self.assertEqual(self.counter(pk), 1)
        self.db.put_item(TableName=TABLE, Item={**key(pk), "n": {"N": "5"}})  # released
        self.assertEqual(self.counter(pk), 5)
        _, state = self.server.control("GET", "/_strict/conflicts")
        self.assertGreaterEqual(state["single_write_conflicts"], 3)

    # --- forced conflicts ---------------------------------------------------------------------

    def test_forced_conflicts_cancel_count_times_then_let_through(self):
        pk, other = unique("tenant-abc#BUDGET"), unique("plain")
        self.seed_item(pk)
        rule_id = self.add_rule({"key_contains": pk, "count": 3, "table": TABLE})
        transaction = [put(other, "x"), increment(pk)]  # every condition holds
        for _ in range(3):
            with self.assertRaises(ClientError) as caught:
                self.db.transact_write_items(TransactItems=transaction)
            self.assertEqual(code(caught.exception), "TransactionCanceledException")
            self.assertEqual(reasons(caught.exception), ["None", "TransactionConflict"])
            self.assertEqual(caught.exception.response["CancellationReasons"][1]["Message"], ONGOING)
        self.db.transact_write_items(TransactItems=transaction)
        self.assertEqual(self.counter(pk), 1)
        self.assertEqual({k: self.rule(rule_id)[k] for k in ("matched", "forced", "count")},
                         {"matched": 4, "forced": 3, "count": 3})

    def test_single_write_rules_refuse_puts_updates_and_deletes_like_a_held_item(self):
        pk, other = unique("tenant-abc#execution#"), unique("plain")
        self.seed_item(pk)
        rule_id = self.add_rule({"key_contains": pk, "count": 3, "single_writes": True})
        attempts = [
            lambda: self.db.put_item(TableName=TABLE, Item={**key(pk), "n": {"N": "9"}}),
            lambda: self.db.update_item(TableName=TABLE, Key=key(pk), UpdateExpression="SET x = :x",
                                        ExpressionAttributeValues={":x": {"S": "x"}}),
            lambda: self.db.delete_item(TableName=TABLE, Key=key(pk)),
        ]
        for attempt in attempts:
            with self.assertRaises(ClientError) as caught:
                attempt()
            self.assertEqual(code(caught.exception), "TransactionConflictException")
        self.db.put_item(TableName=TABLE, Item={**key(other), "n": {"N": "1"}})  # not matching
        self.db.put_item(TableName=TABLE, Item={**key(pk), "n": {"N": "7"}})  # count spent
        self.assertEqual(self.counter(pk), 7)
        self.assertEqual({k: self.rule(rule_id)[k] for k in ("matched", "forced")},
                         {"matched": 4, "forced": 3})
        # Without the switch, a rule leaves single writes alone.
        self.add_rule({"key_contains": pk})
        self.db.put_item(TableName=TABLE, Item={**key(pk), "n": {"N": "8"}})
        self.assertEqual(self.counter(pk), 8)

    def test_removed_rule_stops_and_other_rules_stay(self):
        first, second = unique("first"), unique("second")
        self.seed_item(first)
        self.seed_item(second)
        first_id = self.add_rule({"key_contains": first})
        second_id = self.add_rule({"key_contains": second})
        self.add_rule({"key_contains": first, "table": "another-table"})  # never matches here

        status, removed = self.server.control("DELETE", f"/_strict/conflicts/rules/{first_id}")
        self.assertEqual((status, removed["id"]), (200, first_id))
        self.assertEqual(self.server.control("GET", f"/_strict/conflicts/rules/{first_id}")[0], 404)
        self.assertEqual(self.server.control("DELETE", f"/_strict/conflicts/rules/{first_id}")[0], 404)
        self.db.transact_write_items(TransactItems=[increment(first)])
        with self.assertRaises(ClientError) as caught:
            self.db.transact_write_items(TransactItems=[increment(second)])
        self.assertEqual(reasons(caught.exception), ["TransactionConflict"])
        self.assertEqual(self.rule(second_id)["forced"], 1)

    def test_seeded_probability_repeats_and_rules_can_be_replaced_and_cleared(self):
        pk = unique("coin")
        self.seed_item(pk)

        def pattern():
            outcomes = []
            for _ in range(16):
                try:
                    self.db.transact_write_items(TransactItems=[increment(pk)])
                    outcomes.append(True)
                except ClientError as e:
                    self.assertEqual(reasons(e), ["TransactionConflict"])
                    outcomes.append(False)
            return outcomes

        rule = {"key_contains": pk, "probability": 0.5, "seed": 7}
        status, state = self.server.control("POST", "/_strict/conflicts", {"rules": [rule]})
        self.assertEqual(status, 200, state)
        self.addCleanup(self.server.control, "DELETE", "/_strict/conflicts")
        self.assertEqual([(r["key_contains"], r["probability"], r["seed"]) for r in state["rules"]],
                         [(pk, 0.5, 7)])
        first = pattern()
        self.server.control("POST", "/_strict/conflicts", [rule])  # a bare list replaces too
        second = pattern()
        self.assertEqual(first, second)
        self.assertTrue(0 < first.count(False) < 16, first)
        _, state = self.server.control("GET", "/_strict/conflicts")
        self.assertEqual(state["rules"][0]["forced"], first.count(False))

        status, state = self.server.control("DELETE", "/_strict/conflicts")
        self.assertEqual((status, state["rules"]), (200, []))
        self.db.transact_write_items(TransactItems=[increment(pk)])

    def test_control_endpoint_refuses_bad_requests(self):
        for payload in ({"probability": 1}, {"key_contains": ""}, {"key_contains": "x", "probability": 2},
                        {"key_contains": "x", "count": -1}, {"key_contains": "x", "colour": "red"}):
            status, body = self.server.control("POST", "/_strict/conflicts/rules", payload)
            self.assertEqual(status, 400, payload)
            self.assertIn("message", body)
        self.assertEqual(self.server.control("POST", "/_strict/conflicts", {"rules": 3})[0], 400)
        self.assertEqual(self.server.control("GET", "/_strict/nothing")[0], 404)
        self.assertEqual(self.server.control("PUT", "/_strict/conflicts", {})[0], 405)

    # --- transaction limits -------------------------------------------------------------------

    def test_more_than_100_items_is_a_validation_error(self):
        prefix = unique("many")
        items = [put(prefix, str(i)) for i in range(101)]
        self.assert_refused(
            lambda: self.db.transact_write_items(TransactItems=items),
            "1 validation error detected at 'transactItems' failed to satisfy constraint: "
            "Member must have length less than or equal to 100")
        self.db.transact_write_items(TransactItems=items[:100])

    def test_more_than_4_mb_is_a_validation_error(self):
        prefix, blob = unique("big"), "x" * (350 * 1024)
        items = [put(prefix, str(i), body={"S": blob}) for i in range(12)]  # 4.1 MiB
        self.assert_refused(lambda: self.db.transact_write_items(TransactItems=items),
                            "Transaction request cannot be larger than 4 MB")
        self.assertIsNone(self.db.get_item(TableName=TABLE, Key=key(prefix, "0")).get("Item"))
        self.db.transact_write_items(TransactItems=items[:11])  # 3.8 MiB

    # --- numbers and nesting ------------------------------------------------------------------

    def write_paths(self, value):
        """Every write path storing `value` as attribute v (each on its own item)."""
        pk = unique("value")
        return {
            "PutItem": lambda: self.db.put_item(TableName=TABLE, Item={**key(pk, "put"), "v": value}),
            "UpdateItem": lambda: self.db.update_item(
                TableName=TABLE, Key=key(pk, "update"), UpdateExpression="SET v = :v",
                ExpressionAttributeValues={":v": value}),
            "TransactWriteItems": lambda: self.db.transact_write_items(
                TransactItems=[put(pk, "transact", v=value)]),
            "BatchWriteItem": lambda: self.db.batch_write_item(
                RequestItems={TABLE: [{"PutRequest": {"Item": {**key(pk, "batch"), "v": value}}}]}),
        }

    def assert_refused_everywhere(self, value, message):
        for path, call in self.write_paths(value).items():
            with self.subTest(path=path):
                self.assert_refused(call, message)

    def assert_accepted_everywhere(self, value):
        for path, call in self.write_paths(value).items():
            with self.subTest(path=path):
                call()

    def test_numbers_beyond_38_significant_digits_are_refused(self):
        message = "Attempting to store more than 38 significant digits in a Number"
        self.assert_refused_everywhere({"N": "1" * 39}, message)
        self.assert_refused_everywhere({"N": "0.00" + "1" * 39}, message)
        self.assert_refused_everywhere({"NS": ["1", "1" * 39]}, message)
        for accepted in ("9" * 38, "-" + "9" * 38, "1" + "0" * 60, "0.000" + "1" * 38, "00012"):
            with self.subTest(number=accepted):
                self.assert_accepted_everywhere({"N": accepted})
        pk = unique("exact")
        self.db.put_item(TableName=TABLE, Item={**key(pk), "v": {"N": "1234567890" * 3 + "12345678"}})
        item = self.db.get_item(TableName=TABLE, Key=key(pk))["Item"]
        self.assertEqual(item["v"]["N"], "1234567890" * 3 + "12345678")

    def test_numbers_out_of_range_are_refused(self):
        overflow = "Number overflow. Attempting to store a number with magnitude larger than supported range"
        underflow = ("Number underflow. Attempting to store a number with magnitude smaller than "
                     "supported range")
        self.assert_refused_everywhere({"N": "1E+126"}, overflow)
        self.assert_refused_everywhere({"N": "-1E126"}, overflow)
        self.assert_refused_everywhere({"N": "1E-131"}, underflow)
        for accepted in ("9.9999999999999999999999999999999999999E+125", "1E-130", "-1E-130", "0"):
            with self.subTest(number=accepted):
                self.assert_accepted_everywhere({"N": accepted})

    def test_nesting_deeper_than_32_levels_is_refused(self):
        def nested(levels, kind):
            value = {"S": "leaf"}
            for _ in range(levels):
                value = {"M": {"a": value}} if kind == "M" else {"L": [value]}
            return value

        for kind in ("M", "L"):
            with self.subTest(kind=kind):
                self.assert_refused_everywhere(nested(33, kind),
                                               "Nesting Levels have exceeded supported limits")
                self.assert_accepted_everywhere(nested(32, kind))

    # --- behaviour kept from before -----------------------------------------------------------

    def test_failed_condition_cancels_with_reasons_and_old_item(self):
        existing, fresh = unique("old"), unique("new")
        self.seed_item(existing, n=5)
        update = increment(existing)
        update["Update"].update(ConditionExpression="n = :six", ReturnValuesOnConditionCheckFailure="ALL_OLD",
                                ExpressionAttributeValues={":one": {"N": "1"}, ":six": {"N": "6"}})
        with self.assertRaises(ClientError) as caught:
            self.db.transact_write_items(TransactItems=[put(fresh), update])
        found = caught.exception.response["CancellationReasons"]
        self.assertEqual([r["Code"] for r in found], ["None", "ConditionalCheckFailed"])
        self.assertEqual(found[1]["Item"], {**key(existing), "n": {"N": "5"}})
        self.assertIsNone(self.db.get_item(TableName=TABLE, Key=key(fresh)).get("Item"))
        self.assertEqual(self.counter(existing), 5)

    def test_failing_write_rolls_back_items_and_stream_records(self):
        pk = unique("rollback")
        self.seed_item(pk, n=1)
        records = self.stream_record_count()
        too_large = put(unique("huge"), body={"S": "x" * (500 * 1024)})  # over DynamoDB's 400 KB
        with self.assertRaises(ClientError) as caught:
            self.db.transact_write_items(TransactItems=[increment(pk), too_large])
        self.assertEqual(code(caught.exception), "ValidationException")
        self.assertEqual(self.counter(pk), 1)
        self.assertEqual(self.stream_record_count(), records)

    def stream_record_count(self):
        streams = self.server.client("dynamodbstreams")
        arn = self.db.describe_table(TableName=TABLE)["Table"]["LatestStreamArn"]
        count = 0
        for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
            iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"],
                                                  ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
            while iterator:
                page = streams.get_records(ShardIterator=iterator, Limit=1000)
                count += len(page["Records"])
                iterator = page.get("NextShardIterator") if page["Records"] else None
        return count

    def test_query_reads_the_partition_with_unchanged_results(self):
        table = unique("query")
        create_table(self.db, table, index=True)
        for pk in ("a", "b", "c"):
            for i in range(20):
                self.db.put_item(TableName=table, Item={"pk": {"S": pk}, "sk": {"S": f"{i:02}"},
                                                        "g": {"S": f"g-{i % 2}"}})

        def sks(**params):
            found, start = [], {}
            while True:
                page = self.db.query(TableName=table, **params, **start)
                found += [item["sk"]["S"] for item in page["Items"]]
                if "LastEvaluatedKey" not in page:
                    return found
                start = {"ExclusiveStartKey": page["LastEvaluatedKey"]}

        def where(condition, values):
            return {"KeyConditionExpression": condition,
                    "ExpressionAttributeValues": {k: {"S": v} for k, v in values.items()}}

        every = [f"{i:02}" for i in range(20)]
        partition_b = where("pk = :p", {":p": "b"})
        self.assertEqual(sks(**partition_b), every)
        self.assertEqual(sks(**partition_b, Limit=3), every)
        self.assertEqual(sks(**partition_b, ScanIndexForward=False, Limit=7), every[::-1])
        between = where("pk = :p AND sk BETWEEN :lo AND :hi", {":p": "c", ":lo": "05", ":hi": "09"})
        self.assertEqual(sks(**between), every[5:10])
        self.assertEqual(sks(**where("pk = :p AND sk > :after", {":p": "a", ":after": "15"})), every[16:])
        self.assertEqual(sks(**where("pk = :p AND begins_with(sk, :s)", {":p": "a", ":s": "1"})), every[10:])
        self.assertEqual(sks(**where("pk = :p", {":p": "nobody"})), [])
        self.assertEqual(sks(IndexName="by-g", **where("g = :g", {":g": "g-1"})), sorted(every[1::2] * 3))

        with self.assertRaises(ClientError) as missing:
            self.db.query(TableName=table, IndexName="not-yet", **where("g = :g", {":g": "g-1"}))
        error = missing.exception.response["Error"]
        self.assertEqual(error["Code"], "ValidationException")
        self.assertIn("does not have the specified index: not-yet", error["Message"])

class StartupRulesTest(unittest.TestCase):
    def test_rules_from_the_environment_apply_from_the_start(self):
        pk = unique("boot")
        server = Server({"MOTO_FORCE_CONFLICTS": json.dumps([{"key_contains": pk, "count": 1}])})
        self.addCleanup(server.stop)
        server.wait_ready()
        db = server.client()
        create_table(db, TABLE)
        db.put_item(TableName=TABLE, Item={**key(pk), "n": {"N": "0"}})
        with self.assertRaises(ClientError) as caught:
            db.transact_write_items(TransactItems=[increment(pk)])
        self.assertEqual(reasons(caught.exception), ["TransactionConflict"])
        db.transact_write_items(TransactItems=[increment(pk)])
        _, state = server.control("GET", "/_strict/conflicts")
        self.assertEqual([(r["key_contains"], r["forced"]) for r in state["rules"]], [(pk, 1)])

    def test_invalid_rules_in_the_environment_stop_the_launcher(self):
        server = Server({"MOTO_FORCE_CONFLICTS": '[{"probability": 1}]'})
        self.addCleanup(server.stop)
        self.assertNotEqual(server.process.wait(30), 0)
        self.assertIn("MOTO_FORCE_CONFLICTS: key_contains must be a non-empty string", server.output())


class PersistenceTest(unittest.TestCase):
    """MOTO_STATE_FILE: data outlives the server, whether it is stopped or killed."""

    def setUp(self):
        folder = tempfile.mkdtemp()
        self.state = os.path.join(folder, "moto-state.pickle")
        self.addCleanup(lambda: [os.remove(os.path.join(folder, f)) for f in os.listdir(folder)])

    def server(self):
        server = Server({"MOTO_STATE_FILE": self.state})
        self.addCleanup(lambda: server.process.poll() is None and server.stop())
        return server.wait_ready()

    def saved_after(self, mtime, timeout=15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if os.path.exists(self.state) and os.path.getmtime(self.state) > mtime:
                return
            time.sleep(0.05)
        self.fail("the state was not saved")

    def test_data_survives_a_stop_and_a_crash(self):
        first = self.server()
        db = first.client()
        create_table(db, TABLE, stream=True)
        db.put_item(TableName=TABLE, Item={**key("kept"), "n": {"N": "1"}})
        first.client("secretsmanager").create_secret(Name="kept-secret", SecretString="s3cret")
        first.client("sqs").create_queue(QueueName="kept-queue")
        first.stop()  # SIGTERM: saved on the way out

        second = self.server()
        db = second.client()
        self.assertEqual(db.get_item(TableName=TABLE, Key=key("kept"))["Item"]["n"], {"N": "1"})
        secret = second.client("secretsmanager").get_secret_value(SecretId="kept-secret")
        self.assertEqual(secret["SecretString"], "s3cret")
        self.assertIn("kept-queue", second.client("sqs").get_queue_url(QueueName="kept-queue")["QueueUrl"])
        # Transactions (and their locks) work on the restored tables.
        db.transact_write_items(TransactItems=[increment("kept")])
        before = os.path.getmtime(self.state)
        db.put_item(TableName=TABLE, Item={**key("late"), "n": {"N": "2"}})
        self.saved_after(before)
        second.process.kill()  # a crash: no chance to save on the way out
        second.process.wait()

        third = self.server()
        db = third.client()
        self.assertEqual(db.get_item(TableName=TABLE, Key=key("kept"))["Item"]["n"], {"N": "2"})
        self.assertEqual(db.get_item(TableName=TABLE, Key=key("late"))["Item"]["n"], {"N": "2"})


if __name__ == "__main__":
    unittest.main()
