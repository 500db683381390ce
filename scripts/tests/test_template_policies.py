"""Least privilege in infra/template.yaml: what each function's IAM policy may do.

The template is read with cfn-lint's decoder (intrinsic tags in their long form, `{"Ref": ...}`,
`{"Fn::Sub": ...}`). A function's statements are those of its `Policies` and those of any
`AWS::IAM::Policy` attached to its SAM-generated role (`<Function>Role`). The rules:

- no SAM policy template, no managed policy, no wildcard action, only `Allow`;
- the events table is append-only: PutItem (what a conditional put, alone or in a
  TransactWriteItems, is authorised as), and reads; only the migrator may also UpdateTable
  (its indexes), and nobody may UpdateItem, DeleteItem, BatchWriteItem or set a TTL on it;
- tenant secrets (`<stack>/tenant/*`) are touched only by the worker (read) and the secrets
  function (write, never read); MCP tokens (`<stack>/mcp/*`) only by the worker and mcp;
- the worker reads only the provider keys and those two prefixes, never the JWT signing key;
- each function has exactly the permissions listed in EXPECTED (a new permission is a change
  to review here and in the template together).

A last test runs the SAM transform offline (cfn-lint's translator) and checks the roles as
CloudFormation would create them, with what SAM adds for event sources.

    python3 -m unittest discover -s scripts/tests -p 'test_template_policies.py'
"""

import copy
import itertools
import os
import unittest
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parents[2] / "infra" / "template.yaml"

FUNCTIONS = [
    "AuthFunction",
    "HealthFunction",
    "WorkflowsFunction",
    "ExecutionsFunction",
    "GraphqlFunction",
    "UsageFunction",
    "McpFunction",
    "SecretsFunction",
    "OrchestratorFunction",
    "WorkerFunction",
    "TimerFunction",
    "MigratorFunction",
]

SECRET_ARN = "arn:aws:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:${AWS::StackName}/"

# What a policy resource renders as (see `render`), by the short name the tests use.
RESOURCE_NAMES = {
    "${EventsTable.Arn}": "events",
    "${StateTable.Arn}": "state",
    "${StateTable.Arn}/index/*": "state/index/*",
    "${MigrationsTable.Arn}": "migrations",
    "${JwtSecret}": "jwt-secret",
    "${OpenAiKeyArn}": "openai-key",
    "${AnthropicKeyArn}": "anthropic-key",
    SECRET_ARN + "mcp/*": "secrets:mcp/*",
    SECRET_ARN + "tenant/*": "secrets:tenant/*",
}

# Reads and appends: all that any function but the migrator may do on the events table.
EVENTS_ALLOWED = {
    "dynamodb:PutItem",
    "dynamodb:ConditionCheckItem",
    "dynamodb:GetItem",
    "dynamodb:BatchGetItem",
    "dynamodb:Query",
    "dynamodb:DescribeTable",
}
# The migrator manages the events table's indexes (UpdateTable changes no item).
MIGRATOR_EVENTS_EXTRA = {"dynamodb:UpdateTable"}
EVENTS_FORBIDDEN = {
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:UpdateTimeToLive",
    "dynamodb:DeleteTable",
    "dynamodb:PartiQLUpdate",
    "dynamodb:PartiQLDelete",
    "dynamodb:PartiQLInsert",
}

JWT = {"jwt-secret": {"secretsmanager:GetSecretValue"}}
# ConditionCheckItem: the previous release's appends, during one deploy (see the template).
EVENTS_APPEND = {"events": {"dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:Query",
                            "dynamodb:ConditionCheckItem"}}
# UpdateItem of rate-limit counters only (dynamodb:LeadingKeys RATE#*).
RATE_LIMIT = {"state [RATE#*]": {"dynamodb:UpdateItem"}}


def actions(*names, service="dynamodb"):
    return {f"{service}:{n}" for n in names}


EXPECTED = {
    "AuthFunction": {
        "state": actions("GetItem", "PutItem", "UpdateItem"),
        "state/index/*": actions("Query"),
        **JWT,
    },
    "HealthFunction": {
        "events": actions("DescribeTable"),
        "state": actions("DescribeTable"),
        "migrations": actions("DescribeTable", "Query"),
        "state/index/*": actions("Query"),
        **RATE_LIMIT,
        "jwt-secret": {"secretsmanager:DescribeSecret"},
    },
    "WorkflowsFunction": {
        "state": actions("GetItem", "BatchGetItem", "PutItem", "UpdateItem"),
        "state/index/*": actions("Query"),
        **JWT,
    },
    "ExecutionsFunction": {
        **EVENTS_APPEND,
        "state": actions("GetItem", "BatchGetItem", "PutItem"),
        "state/index/*": actions("Query"),
        **RATE_LIMIT,
        **JWT,
    },
    "GraphqlFunction": {
        **EVENTS_APPEND,
        "state": actions("GetItem", "BatchGetItem", "PutItem", "UpdateItem", "Query"),
        "state/index/*": actions("Query"),
        "secrets:mcp/*": {"secretsmanager:GetSecretValue"},
        **JWT,
    },
    "UsageFunction": {
        "state": actions("GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query"),
        **JWT,
    },
    "McpFunction": {
        "state": actions("GetItem", "PutItem", "DeleteItem", "Query"),
        **RATE_LIMIT,
        **JWT,
        "secrets:mcp/*": actions(
            "CreateSecret", "PutSecretValue", "GetSecretValue", "DeleteSecret",
            service="secretsmanager",
        ),
    },
    "SecretsFunction": {
        "state": actions("GetItem", "PutItem", "DeleteItem", "Query"),
        **RATE_LIMIT,
        **JWT,
        "secrets:tenant/*": actions(
            "CreateSecret", "PutSecretValue", "DeleteSecret",
            service="secretsmanager",
        ),
    },
    "OrchestratorFunction": {
        **EVENTS_APPEND,
        "state": actions("GetItem", "BatchGetItem", "PutItem", "DeleteItem"),
    },
    "WorkerFunction": {
        **EVENTS_APPEND,
        "state": actions("GetItem", "BatchGetItem", "PutItem", "UpdateItem", "DeleteItem"),
        "secrets:mcp/*": {"secretsmanager:GetSecretValue"},
        "secrets:tenant/*": {"secretsmanager:GetSecretValue"},
        "openai-key": {"secretsmanager:GetSecretValue"},
        "anthropic-key": {"secretsmanager:GetSecretValue"},
        "arn:aws:bedrock:*::foundation-model/*": {"bedrock:InvokeModel"},
        "arn:aws:bedrock:*:${AWS::AccountId}:inference-profile/*": {"bedrock:InvokeModel"},
    },
    "TimerFunction": {
        **EVENTS_APPEND,
        "state": actions("GetItem", "BatchGetItem", "PutItem", "UpdateItem", "DeleteItem", "Query"),
        "state/index/*": actions("Query"),
    },
    "MigratorFunction": {
        "migrations": actions("GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query"),
        "events": actions("DescribeTable", "UpdateTable"),
        "state": actions(
            "DescribeTable", "UpdateTable", "DescribeTimeToLive", "UpdateTimeToLive",
            "BatchWriteItem", "Scan", "UpdateItem",
        ),
    },
}


def load_template(path=None):
    """The template as plain data, intrinsics in their long form."""
    path = path or TEMPLATE
    try:
        from cfnlint.decode import decode
    except ImportError:
        return _load_with_yaml(path)
    template, matches = decode(str(path))
    if matches:
        raise AssertionError(f"{path} does not parse: {[str(m) for m in matches]}")
    return template


def _load_with_yaml(path):
    """A fallback for machines without cfn-lint: PyYAML with CloudFormation's short tags."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def intrinsic(loader, suffix, node):
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        if suffix == "Ref":
            return {"Ref": value}
        if suffix == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
        if suffix == "Condition":
            return {"Condition": value}
        return {f"Fn::{suffix}": value}

    Loader.add_multi_constructor("!", intrinsic)
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=Loader)  # noqa: S506 (a SafeLoader subclass)


def render(value):
    """A policy resource as the texts it can be: `${Table.Arn}` for a GetAtt, `${Name}` for a
    Ref, a Sub as written; an If is each of its branches, and AWS::NoValue is none."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict) and len(value) == 1:
        (key, arg), = value.items()
        if key == "Ref":
            return [] if arg == "AWS::NoValue" else ["${%s}" % arg]
        if key == "Fn::GetAtt":
            parts = arg.split(".", 1) if isinstance(arg, str) else list(arg)
            return ["${%s}" % ".".join(str(p) for p in parts)]
        if key == "Fn::Sub":
            return [arg if isinstance(arg, str) else arg[0]]
        if key == "Fn::Join":
            sep, parts = arg
            rendered = [render(p) for p in parts]
            return [str(sep).join(combo) for combo in itertools.product(*rendered)]
        if key == "Fn::If":
            _, yes, no = arg
            return render(yes) + render(no)
    raise AssertionError(f"a policy resource the tests cannot read: {value!r}")


def as_list(value):
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def resource_name(text, statement):
    name = RESOURCE_NAMES.get(text, text)
    keys = (
        statement.get("Condition", {})
        .get("ForAllValues:StringLike", {})
        .get("dynamodb:LeadingKeys")
    )
    if keys:
        name += " [" + ", ".join(as_list(keys)) + "]"
    return name


class Policies:
    """A function's policy statements, as written in the template."""

    def __init__(self, template, function):
        resources = template["Resources"]
        self.function = function
        self.properties = resources[function]["Properties"]
        self.sam_templates = []
        self.managed = []
        self.statements = []
        for policy in as_list(self.properties.get("Policies")):
            if isinstance(policy, str):
                self.managed.append(policy)
            elif isinstance(policy, dict) and set(policy) <= {"Version", "Statement"}:
                self.statements.extend(as_list(policy.get("Statement")))
            else:
                self.sam_templates.extend(policy)
        role = {"Ref": f"{function}Role"}
        for logical_id, resource in resources.items():
            if resource.get("Type") != "AWS::IAM::Policy":
                continue
            if role in as_list(resource["Properties"].get("Roles")):
                self.statements.extend(
                    as_list(resource["Properties"]["PolicyDocument"].get("Statement"))
                )

    def texts(self):
        """(action, resource as rendered) for every Allow."""
        for statement in self.statements:
            for action in as_list(statement.get("Action")):
                for resource in as_list(statement.get("Resource")):
                    for text in render(resource):
                        yield action, text, statement

    def grants(self):
        """(action, resource name) for every Allow."""
        for action, text, statement in self.texts():
            yield action, resource_name(text, statement)

    def by_resource(self):
        found = {}
        for action, name in self.grants():
            found.setdefault(name, set()).add(action)
        return found

    def resources_of(self, action):
        return {name for a, name in self.grants() if a == action}


class TemplatePolicies(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.template = load_template()
        cls.policies = {f: Policies(cls.template, f) for f in FUNCTIONS}

    def test_every_function_is_covered(self):
        declared = {
            k for k, r in self.template["Resources"].items()
            if r.get("Type") == "AWS::Serverless::Function"
        }
        self.assertEqual(declared, set(FUNCTIONS))

    def test_only_explicit_statements(self):
        for function, p in self.policies.items():
            with self.subTest(function):
                self.assertEqual(p.sam_templates, [], "SAM policy templates grant more than is called")
                self.assertEqual(p.managed, [], "managed policies grant more than is called")
                self.assertTrue(p.statements)
                for s in p.statements:
                    self.assertEqual(s.get("Effect"), "Allow", s)
                    self.assertNotIn("NotAction", s)
                    self.assertNotIn("NotResource", s)
                    self.assertTrue(as_list(s.get("Resource")), s)

    def test_no_wildcard_actions_or_resources(self):
        for function, p in self.policies.items():
            with self.subTest(function):
                for action, resource in p.grants():
                    self.assertNotIn("*", action, f"{action} on {resource}")
                    if action.startswith(("dynamodb:", "secretsmanager:")):
                        self.assertNotEqual(resource, "*", action)
                        self.assertNotIn(":table/*", resource, action)

    def test_each_function_has_exactly_what_it_calls(self):
        for function, p in self.policies.items():
            with self.subTest(function):
                self.assertEqual(p.by_resource(), EXPECTED[function])

    def test_the_events_table_is_append_only(self):
        for function, p in self.policies.items():
            with self.subTest(function):
                on_events = {
                    a for a, r in p.grants() if r == "events" or r.startswith("events ")
                }
                allowed = EVENTS_ALLOWED | (
                    MIGRATOR_EVENTS_EXTRA if function == "MigratorFunction" else set()
                )
                self.assertLessEqual(on_events, allowed)
                self.assertFalse(on_events & EVENTS_FORBIDDEN)
                # Nothing reaches the events table through another spelling of its ARN.
                for action, text, _ in p.texts():
                    if action.startswith("dynamodb:") and text not in RESOURCE_NAMES:
                        self.fail(f"{action} on {text}: name the table by !GetAtt <Table>.Arn")

    def test_tenant_and_mcp_secrets_are_touched_only_by_their_functions(self):
        def touching(fragment):
            return {
                f for f, p in self.policies.items()
                if any(fragment in text for _, text, _ in p.texts())
            }

        self.assertEqual(touching("/tenant/"), {"WorkerFunction", "SecretsFunction"})
        # GraphQL reads a server's token to list its tools, as the mcp function does.
        self.assertEqual(touching("/mcp/"), {"WorkerFunction", "McpFunction", "GraphqlFunction"})

    def test_the_worker_never_reads_the_jwt_key(self):
        read = self.policies["WorkerFunction"].resources_of("secretsmanager:GetSecretValue")
        self.assertEqual(
            read,
            {"secrets:mcp/*", "secrets:tenant/*", "openai-key", "anthropic-key"},
        )
        self.assertNotIn("jwt-secret", read)
        for function, p in self.policies.items():
            with self.subTest(function):
                for _, text, _ in p.texts():
                    # `<stack>/*` (or any wider secret pattern) would include the JWT key.
                    self.assertFalse(text.endswith("${AWS::StackName}/*"), text)
                    self.assertFalse(text.endswith(":secret:*"), text)
                    self.assertFalse(text.endswith("${AWS::StackName}*"), text)

    def test_only_http_functions_read_the_jwt_key(self):
        readers = {
            f for f, p in self.policies.items()
            if "jwt-secret" in p.resources_of("secretsmanager:GetSecretValue")
        }
        http = {
            f for f in FUNCTIONS
            if any(
                e.get("Type") == "HttpApi"
                for e in (self.template["Resources"][f]["Properties"].get("Events") or {}).values()
            )
        }
        # Health only checks that the key exists (DescribeSecret).
        self.assertEqual(readers, http - {"HealthFunction"})

    def test_the_secrets_function_cannot_read_values(self):
        p = self.policies["SecretsFunction"]
        self.assertEqual(p.resources_of("secretsmanager:GetSecretValue"), {"jwt-secret"})
        self.assertEqual(
            p.by_resource()["secrets:tenant/*"],
            actions("CreateSecret", "PutSecretValue", "DeleteSecret",
                    service="secretsmanager"),
        )

    def test_the_secrets_function(self):
        resource = self.template["Resources"]["SecretsFunction"]
        self.assertEqual(resource["Metadata"]["BuildProperties"]["Binary"], "secrets")
        props = resource["Properties"]
        self.assertEqual(props["FunctionName"], {"Fn::Sub": "${AWS::StackName}-secrets"})
        routes = {
            (e["Properties"]["Method"].upper(), e["Properties"]["Path"])
            for e in props["Events"].values()
            if e["Type"] == "HttpApi"
        }
        self.assertEqual(
            routes,
            {
                ("GET", "/secrets"),
                ("GET", "/secrets/{name}"),
                ("PUT", "/secrets/{name}"),
                ("DELETE", "/secrets/{name}"),
            },
        )

    def test_tenant_secret_prefix_is_set_for_every_function(self):
        env = self.template["Globals"]["Function"]["Environment"]["Variables"]
        self.assertEqual(env["TENANT_SECRET_PREFIX"], {"Fn::Sub": "${AWS::StackName}/tenant"})

    def test_provider_keys_exist_only_when_configured(self):
        conditions = self.template["Conditions"]
        for name, parameter in [("HasOpenAiKey", "OpenAiKeyArn"), ("HasAnthropicKey", "AnthropicKeyArn")]:
            self.assertEqual(
                conditions[name], {"Fn::Not": [{"Fn::Equals": [{"Ref": parameter}, ""]}]}
            )
        policies = [
            r for r in self.template["Resources"].values()
            if r.get("Type") == "AWS::IAM::Policy"
            and {"Ref": "WorkerFunctionRole"} in as_list(r["Properties"].get("Roles"))
        ]
        self.assertEqual(len(policies), 1)
        policy = policies[0]
        self.assertEqual(policy.get("Condition"), "HasProviderKey")
        (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
        self.assertEqual(
            statement["Resource"],
            [
                {"Fn::If": ["HasOpenAiKey", {"Ref": "OpenAiKeyArn"}, {"Ref": "AWS::NoValue"}]},
                {"Fn::If": ["HasAnthropicKey", {"Ref": "AnthropicKeyArn"}, {"Ref": "AWS::NoValue"}]},
            ],
        )


class TransformedRoles(unittest.TestCase):
    """The roles SAM creates: what the template's statements become, plus what SAM adds."""

    MANAGED_ALLOWED = {
        "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
        # Stream functions: reading DynamoDB streams (DescribeStream, GetRecords, ...).
        "arn:aws:iam::aws:policy/service-role/AWSLambdaDynamoDBExecutionRole",
    }

    @classmethod
    def setUpClass(cls):
        try:
            from cfnlint.template.transforms._sam import Transform
        except ImportError as e:  # pragma: no cover
            raise unittest.SkipTest(f"no SAM translator: {e}")
        region = os.environ.get("AWS_DEFAULT_REGION")
        try:
            transform = Transform(str(TEMPLATE), copy.deepcopy(load_template()), "us-east-1")
            errors = transform.transform_template()
            cls.errors = [str(e) for e in errors]
            cls.resources = transform.template()["Resources"]
        finally:
            if region is None:
                os.environ.pop("AWS_DEFAULT_REGION", None)
            else:
                os.environ["AWS_DEFAULT_REGION"] = region

    def test_transform_succeeds(self):
        self.assertEqual(self.errors, [])

    def role_statements(self, function):
        role = self.resources[f"{function}Role"]["Properties"]
        statements = []
        for policy in role.get("Policies", []):
            statements.extend(as_list(policy["PolicyDocument"]["Statement"]))
        return role, statements

    def test_roles_hold_only_narrow_statements(self):
        for function in FUNCTIONS:
            with self.subTest(function):
                role, statements = self.role_statements(function)
                self.assertLessEqual(set(role.get("ManagedPolicyArns", [])), self.MANAGED_ALLOWED)
                for s in statements:
                    for action in as_list(s["Action"]):
                        self.assertNotIn("*", action)
                        resources = [t for r in as_list(s["Resource"]) for t in render(r)]
                        if action.startswith("dynamodb:") and any(
                            r.startswith("${EventsTable") for r in resources
                        ):
                            allowed = EVENTS_ALLOWED | (
                                MIGRATOR_EVENTS_EXTRA if function == "MigratorFunction" else set()
                            )
                            self.assertIn(action, allowed)
                        if action.startswith("sqs:"):
                            self.assertEqual(action, "sqs:SendMessage")
                            self.assertEqual(resources, ["${StreamFailureQueue.Arn}"])

    def test_stream_functions_can_report_failures(self):
        # The OnFailure destination needs sqs:SendMessage; SAM grants it from the event.
        for function in ["OrchestratorFunction", "WorkerFunction"]:
            with self.subTest(function):
                _, statements = self.role_statements(function)
                self.assertIn(
                    ("sqs:SendMessage", "${StreamFailureQueue.Arn}"),
                    {
                        (a, t)
                        for s in statements
                        for a in as_list(s["Action"])
                        for r in as_list(s["Resource"])
                        for t in render(r)
                    },
                )


if __name__ == "__main__":
    unittest.main()
