"""Secret hygiene across the whole fault and fuzz suite (this file runs last in the directory):
no log line, error body, header or exception text holds a seeded value or a token."""

from __future__ import annotations


def test_no_seeded_secret_or_token_in_any_log_error_body_or_exception(hygiene, figures):
    leaks = hygiene.leaks()
    figures["secret_hygiene"] = {
        "sensitive_strings": len(hygiene.sensitive),
        "texts_checked": len(hygiene.texts),
        "chars_checked": sum(len(t) for _, t in hygiene.texts),
        "leaks": len(leaks),
    }
    print("\nhygiene:", figures["secret_hygiene"])
    assert not leaks, leaks
    # The net was cast: it saw secrets, tokens and texts (vacuous when this file runs alone).
    if hygiene.sensitive:
        assert hygiene.texts
