"""mondemand/redact.py: URLs and known secrets out of text."""

from __future__ import annotations

import pytest

from mondemand.options import Option, OptionError
from mondemand.redact import redact_text, redact_url, url_secrets


@pytest.mark.parametrize(("url", "expected"), [
    ("https://user:pass@host/p?token=abc&x=1", "https://***@host/p?token=***&x=***"),
    ("https://user@host:8443/p", "https://***@host:8443/p"),
    ("http://host/hooks/abc", "http://host/hooks/abc"),
    ("http://host/?flag&empty=", "http://host/?flag&empty="),
    ("http://a:b@[::1/x?k=v", "http://***@[::1/x?k=***"),  # does not parse: redacted textually
    ("not a url ?k=v", "not a url ?k=***"),
])
def test_redact_url(url, expected):
    assert redact_url(url) == expected


def test_redact_text_finds_urls_and_keeps_the_sentence_around_them():
    text = "POST http://u:p@h:1/x?token=zzz: HTTP 502 (see <https://a/?k=v>)."
    assert redact_text(text) == "POST http://***@h:1/x?token=***: HTTP 502 (see <https://a/?k=***>)."


def test_known_secrets_are_replaced_wherever_they_are_but_not_tiny_ones():
    assert redact_text("auth failed for hunter22 / ab", ["hunter22", "ab"]) == "auth failed for *** / ab"
    assert set(url_secrets("http://u:pa%40ss@h/")) == {"u:pa%40ss", "pa%40ss", "pa@ss"}
    assert url_secrets("http://h/?token=x") == []


def test_a_config_problem_does_not_repeat_the_secret_of_a_bad_value():
    def only_https(value: str) -> None:
        if not value.startswith("https://"):
            raise ValueError("expected https")

    with pytest.raises(OptionError) as info:
        Option("url", check=only_https).convert("ftp://me:t0psecret@host/?token=abc")
    assert "t0psecret" not in str(info.value) and "abc" not in str(info.value)
    assert "(got 'ftp://***@host/?token=***')" in str(info.value)
