"""Pairing BatchGetSecretValue results with the ids asked for: exact forms only, never prefixes."""

from __future__ import annotations

from typing import Any

from secretcache.reads import match_secret_values, secret_id_forms

ARN_BASE = "arn:aws:secretsmanager:us-east-1:123456789012:secret:"


def _value(name: str, suffix: str) -> dict[str, Any]:
    return {"Name": name, "ARN": f"{ARN_BASE}{name}-{suffix}", "SecretString": f"value of {name}"}


PROD = _value("rt/prod", "AbC123")
PROD_DB = _value("rt/prod-db", "XyZ789")


def test_a_secret_answers_to_its_name_full_arn_and_partial_arn() -> None:
    assert secret_id_forms(PROD) == {
        "rt/prod",
        f"{ARN_BASE}rt/prod-AbC123",
        f"{ARN_BASE}rt/prod",
    }


def test_partial_arn_of_a_name_that_prefixes_another_is_matched_to_its_own_secret() -> None:
    asked = [f"{ARN_BASE}rt/prod", f"{ARN_BASE}rt/prod-db"]
    matched = match_secret_values(asked, [PROD_DB, PROD])
    assert matched == {asked[0]: PROD, asked[1]: PROD_DB}


def test_a_prefix_that_names_no_secret_is_matched_to_nothing() -> None:
    assert match_secret_values([f"{ARN_BASE}rt/", "rt/"], [PROD, PROD_DB]) == {}


def test_the_same_secret_by_name_and_by_arn_is_matched_to_both_ids() -> None:
    asked = ["rt/prod", PROD["ARN"]]
    assert match_secret_values(asked, [PROD]) == {"rt/prod": PROD, PROD["ARN"]: PROD}


def test_an_id_that_two_returned_secrets_answer_to_is_not_matched() -> None:
    # The full ARN of rt/prod is also the partial ARN of a secret named "rt/prod-AbC123".
    lookalike = _value("rt/prod-AbC123", "QwE456")
    assert match_secret_values([PROD["ARN"]], [PROD, lookalike]) == {}


def test_an_arn_without_the_six_character_suffix_has_no_partial_form() -> None:
    odd = {"Name": "x", "ARN": f"{ARN_BASE}x-abc"}
    assert secret_id_forms(odd) == {"x", f"{ARN_BASE}x-abc"}
