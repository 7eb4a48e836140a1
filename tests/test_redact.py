"""Passwords never shown (admmsearch.redact): masked in URLs, and wherever a URL's password
appears in a message, as written or percent-decoded."""

from __future__ import annotations

import pytest

from admmsearch.redact import MASK, redact_text, redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:s3cret@db:5432/x", "postgresql://u:***@db:5432/x"),
        ("postgresql+psycopg://u:p@ss@db/x", "postgresql+psycopg://u:***@db/x"),
        ("http://user:pw@mlflow:5000", "http://user:***@mlflow:5000"),
        ("postgresq://u:pw@db/x", "postgresq://u:***@db/x"),  # a mistyped scheme too
        ("sqlite:///admmsearch.db", "sqlite:///admmsearch.db"),
        ("http://user@host/x", "http://user@host/x"),  # no password, nothing to hide
        ("postgresql://u:@db/x", "postgresql://u:@db/x"),
    ],
)
def test_redact_url_masks_only_the_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_text_masks_the_password_as_written_and_decoded() -> None:
    url = "postgresql://u:p%40ss%2Fw@db/x"
    text = "auth failed for p%40ss%2Fw (decoded p@ss/w) at db"
    assert redact_text(text, url, None) == f"auth failed for {MASK} (decoded {MASK}) at db"
    assert redact_text("nothing secret", "sqlite:///x.db") == "nothing secret"
