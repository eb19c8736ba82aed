"""The reference grammar: what parses, into what, and every malformed form refused without echo."""

from __future__ import annotations

import pytest
from secretcache.envrefs import (
    KmsReference,
    MalformedReference,
    ParameterReference,
    SecretReference,
    parse_environment,
    parse_value,
)

ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf"
VERSION_ID = "EXAMPLE1-90ab-cdef-fedc-ba987EXAMPLE"


def only(value: str) -> object:
    template = parse_value("VAR", value)
    assert len(template.references) == 1
    return template.references[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("secretsmanager:prod/db", SecretReference("prod/db")),
        ("secretsmanager:prod/db:SecretString", SecretReference("prod/db")),
        ("secretsmanager:prod/db:SecretString:", SecretReference("prod/db")),
        ("secretsmanager:prod/db:SecretString:password", SecretReference("prod/db", "password")),
        ("secretsmanager:prod/db::password", SecretReference("prod/db", "password")),
        (
            "secretsmanager:prod/db:SecretString:password:AWSPREVIOUS",
            SecretReference("prod/db", "password", "AWSPREVIOUS"),
        ),
        (
            f"secretsmanager:prod/db:SecretString:::{VERSION_ID}",
            SecretReference("prod/db", None, None, VERSION_ID),
        ),
        (f"secretsmanager:{ARN}", SecretReference(ARN)),
        (f"secretsmanager:{ARN}:SecretString:user", SecretReference(ARN, "user")),
        ("secretsmanager:a+b=c.d@e_f-g", SecretReference("a+b=c.d@e_f-g")),
        ("ssm:/app/flag", ParameterReference("/app/flag")),
        ("ssm:/app/flag:3", ParameterReference("/app/flag", 3)),
        ("ssm:plain_name.v-1", ParameterReference("plain_name.v-1")),
        ("ssm-secure:/app/api-key", ParameterReference("/app/api-key", None, True)),
        ("ssm-secure:/app/api-key:12", ParameterReference("/app/api-key", 12, True)),
        (
            "ssm:arn:aws:ssm:eu-west-1:123456789012:parameter/shared/flag:2",
            ParameterReference("arn:aws:ssm:eu-west-1:123456789012:parameter/shared/flag", 2),
        ),
        ("kms:DB_PASSWORD_ENC", KmsReference("DB_PASSWORD_ENC")),
        (
            "kms:ENC:LambdaFunctionName=my-fn,app=x",
            KmsReference("ENC", (("LambdaFunctionName", "my-fn"), ("app", "x"))),
        ),
    ],
)
def test_well_formed_references_parse_to_their_parts(text: str, expected: object) -> None:
    assert only("{{resolve:" + text + "}}") == expected


def test_several_references_and_literal_text_in_one_value_keep_their_order() -> None:
    template = parse_value(
        "DB_URL",
        "postgres://{{resolve:secretsmanager:db::user}}:{{resolve:secretsmanager:db::pw}}@h/x",
    )
    user, pw = SecretReference("db", "user"), SecretReference("db", "pw")
    assert template.parts == ("postgres://", user, ":", pw, "@h/x")
    assert template.sources == (
        "{{resolve:secretsmanager:db::user}}",
        "{{resolve:secretsmanager:db::pw}}",
    )
    assert template.render({user: "u", pw: "p"}) == "postgres://u:p@h/x"


def test_adjacent_references_and_a_value_that_is_only_a_reference() -> None:
    template = parse_value("V", "{{resolve:ssm:/a}}{{resolve:ssm:/b}}")
    assert template.parts == (ParameterReference("/a"), ParameterReference("/b"))


def test_canonical_text_round_trips() -> None:
    for text in (
        "{{resolve:secretsmanager:prod/db}}",
        "{{resolve:secretsmanager:prod/db:SecretString:password:AWSPREVIOUS}}",
        f"{{{{resolve:secretsmanager:prod/db:SecretString:::{VERSION_ID}}}}}",
        "{{resolve:ssm-secure:/x:4}}",
        "{{resolve:kms:ENC:a=b,c=d}}",
    ):
        ref = only(text)
        assert ref.text == text  # type: ignore[attr-defined]
        assert only(ref.text) == ref  # type: ignore[attr-defined]


def test_text_without_resolve_is_left_alone() -> None:
    templates, malformed = parse_environment(
        {"A": "{{ mustache }}", "B": "{{resolve", "C": "resolve:ssm:/x}}", "D": ""}
    )
    assert templates == [] and malformed == []


@pytest.mark.parametrize(
    ("value", "position", "reason"),
    [
        ("{{resolve:ssm:/a", 1, "no closing '}}'"),
        ("abc{{resolve:vault:x}}", 4, "unknown service"),
        ("{{resolve:}}", 1, "unknown service"),
        ("{{resolve:ssm}}", 1, "without an identifier"),
        ("{{resolve:ssm:}}", 1, "without an identifier"),
        ("{{resolve:SSM:/a}}", 1, "unknown service"),
        ("{{resolve:ssm:/a:b}}", 1, "positive integer"),
        ("{{resolve:ssm:/a:0}}", 1, "positive integer"),
        ("{{resolve:ssm:/a:-1}}", 1, "positive integer"),
        ("{{resolve:ssm:/a:1:2}}", 1, "too many fields"),
        ("{{resolve:ssm:/a b}}", 1, "not a valid parameter name"),
        ("{{resolve:ssm:arn:aws:ssm:r:1:parameter/x}}", 1, "not a valid parameter ARN"),
        ("{{resolve:secretsmanager::SecretString}}", 1, "not a valid secret name"),
        ("{{resolve:secretsmanager:a b}}", 1, "not a valid secret name"),
        ("{{resolve:secretsmanager:db:SecretBinary}}", 1, "SecretString or empty"),
        ("{{resolve:secretsmanager:db:SecretString:k:s:v:extra}}", 1, "too many fields"),
        ("{{resolve:secretsmanager:db::k:AWSCURRENT:" + VERSION_ID + "}}", 1, "not both"),
        ("{{resolve:secretsmanager:db::::short-id}}", 1, "not a valid version id"),
        ("{{resolve:secretsmanager:db::a key}}", 1, "not a valid JSON key"),
        ("{{resolve:secretsmanager:arn:aws:secretsmanager:x}}", 1, "not a valid secret ARN"),
        ("{{resolve:secretsmanager:db::{{resolve:ssm:/x}}}}", 1, "not a valid JSON key"),
        ("{{resolve:kms:1BAD}}", 1, "environment variable name"),
        ("{{resolve:kms:VAR}}", 1, "another variable"),
        ("{{resolve:kms:ENC:}}", 1, "empty encryption context"),
        ("{{resolve:kms:ENC:novalue}}", 1, "KEY=VALUE"),
        ("{{resolve:kms:ENC:a=b,a=c}}", 1, "appears twice"),
        ("ok {{resolve:ssm:/a}} then {{resolve:nope}}", 28, "unknown service"),
    ],
)
def test_malformed_references_are_refused_with_position_and_reason(
    value: str, position: int, reason: str
) -> None:
    with pytest.raises(MalformedReference) as refused:
        parse_value("VAR", value)
    message = str(refused.value)
    assert message.startswith(f"VAR: malformed reference at character {position}: ")
    assert reason in message


def test_a_malformed_message_never_quotes_the_value() -> None:
    pasted = "hunter2-Sup3rS3cret"
    for value in (
        f"{pasted}{{{{resolve:{pasted}}}}}",
        f"{{{{resolve:ssm:{pasted}:{pasted}}}}}",
        f"{{{{resolve:secretsmanager:db:{pasted}}}}}",
        f"{{{{resolve:kms:ENC:{pasted}}}}}",
        f"{{{{resolve:ssm:/a {pasted}",
    ):
        with pytest.raises(MalformedReference) as refused:
            parse_value("VAR", value)
        assert "hunter2" not in str(refused.value)
        assert "Sup3r" not in repr(refused.value.args)


def test_parse_environment_collects_templates_and_malformed_variables_in_name_order() -> None:
    templates, malformed = parse_environment(
        {
            "B_GOOD": "{{resolve:ssm:/b}}",
            "A_GOOD": "x{{resolve:ssm-secure:/a}}",
            "C_BAD": "{{resolve:ssm:/c:zero}}",
            "PLAIN": "nothing here",
        }
    )
    assert [t.variable for t in templates] == ["A_GOOD", "B_GOOD"]
    assert [m.variable for m in malformed] == ["C_BAD"]


def test_references_are_immutable_values_that_dedupe_in_sets() -> None:
    a, b = SecretReference("db", "pw"), SecretReference("db", "pw")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert SecretReference("db") != ParameterReference("db")
    with pytest.raises(AttributeError):
        a.secret_id = "other"
    assert repr(ParameterReference("/x", 2)) == (
        "ParameterReference(name='/x', secure=False, version=2)"
    )


def test_the_wrapper_path_imports_neither_re_nor_dataclasses() -> None:
    """They cost more than the rest of the wrapper's start; a fresh interpreter proves it."""
    import subprocess
    import sys
    from pathlib import Path

    app = Path(__file__).resolve().parents[2] / "extension"
    code = (
        "import sys; sys.path[0] = sys.argv[1]; import secretcache.exec_wrapper; "
        "print(sorted({'re', 'dataclasses', 'typing', 'socket', 'threading'} & set(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-E", "-S", "-c", code, str(app)], capture_output=True, text=True
    )
    assert done.stdout.strip() == "[]", done.stderr


def test_the_secretcache_opener_is_the_same_grammar_for_cloudformation_templates() -> None:
    template = parse_value(
        "V", "a{{secretcache:secretsmanager:db::pw}}b{{resolve:ssm:/x:2}}c{{secretcache:kms:E}}"
    )
    assert template.references == (
        SecretReference("db", "pw"),
        ParameterReference("/x", 2),
        KmsReference("E"),
    )
    assert template.sources == (
        "{{secretcache:secretsmanager:db::pw}}",
        "{{resolve:ssm:/x:2}}",
        "{{secretcache:kms:E}}",
    )
    assert template.parts[0] == "a" and template.parts[-2] == "c"
    with pytest.raises(MalformedReference) as refused:
        parse_value("V", "x{{secretcache:resolve:ssm:/a}}")
    assert "at character 2: unknown service" in str(refused.value)
    templates, _ = parse_environment({"A": "{{secretcache:ssm:/a}}", "B": "{{secretcache"})
    assert [t.variable for t in templates] == ["A"]
