"""Redaction of secret values: whole tokens only, in the forms programs quote and encode them."""
from __future__ import annotations

import base64
import json
import re
from urllib.parse import quote, quote_plus, urlencode

import pytest

from ansible_collections.cloudcron.scheduler.plugins.module_utils._redact import MASK, Redactor, redact

SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCY=EXAMPLE"


def test_a_short_secret_hides_only_whole_tokens():
    r = Redactor(["list"])
    assert r.redact("listing machines failed: list") == "listing machines failed: " + MASK
    assert r.redact("list_nodes, blacklist, lists, list.") == "list_nodes, blacklist, lists, " + MASK + "."
    assert r.redact("key=list&x=1") == "key=" + MASK + "&x=1"


def test_a_secret_glued_to_other_characters_at_a_non_word_edge_is_still_hidden():
    # The secret begins with '/' and ends with '!': nothing is a word boundary there, so any neighbour counts.
    r = Redactor(["/abc123!"])
    assert r.redact("x/abc123!y") == "x" + MASK + "y"


@pytest.mark.parametrize("encode", [
    lambda s: s,
    lambda s: quote(s, safe=""),
    lambda s: re.sub("%[0-9A-F]{2}", lambda m: m.group(0).lower(), quote(s, safe="")),
    quote,
    quote_plus,
    lambda s: urlencode({"secret": s}).split("=", 1)[1],
    lambda s: json.dumps(s)[1:-1],
    lambda s: repr(s)[1:-1],
    lambda s: base64.b64encode(s.encode()).decode(),
    lambda s: base64.urlsafe_b64encode(s.encode()).decode().rstrip("="),
], ids=["raw", "percent", "percent-lower", "quote", "quote_plus", "urlencode", "json", "repr", "base64", "base64url"])
def test_every_common_form_of_a_secret_is_hidden(encode):
    form = encode(SECRET)
    text = f"request failed: https://api.example/x?a=1&secret={form}&b=2 ({form})"
    out = redact(text, [SECRET])
    assert form not in out and out.count(MASK) == 2, out
    assert out.startswith("request failed: https://api.example/x?a=1&secret=")


def test_non_ascii_and_lone_surrogate_secrets_are_hidden_in_their_escaped_forms():
    secret = "caf\u00e9-p\u00e4ss\udce9word"
    r = Redactor([secret])
    yaml_line = '  secret: !unsafe "caf\\u00E9-p\\u00E4ss\\uDCE9word"'
    json_text = json.dumps({"secret": secret})
    assert "p" not in r.redact(yaml_line).split("!unsafe")[1].replace(MASK, "")
    assert r.redact(json_text) == '{"secret": "' + MASK + '"}'
    assert r.redact("bytes: " + quote(secret.encode("utf-8", "surrogateescape"), safe="")) == "bytes: " + MASK


def test_the_lines_of_a_multi_line_secret_are_secrets_too():
    body = ["b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW",
            "QyNTUxOQAAACDrM5yV6i3Vmg3yq0Zl0Qd4ZP8rQ0Gk1c1x5n1u8aXk7wAAAJgq3M3cKtzN"]
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\n" + "\n".join(body) + "\n-----END OPENSSH PRIVATE KEY-----\n"
    r = Redactor([key])
    out = r.redact(f"Load key: invalid format near {body[1]}")
    assert body[1] not in out and out.endswith(MASK)
    # The fences are no secret and stay readable.
    assert r.redact("-----BEGIN OPENSSH PRIVATE KEY-----") == "-----BEGIN OPENSSH PRIVATE KEY-----"


def test_values_of_nested_credentials_are_secrets_and_their_names_are_not():
    r = Redactor([{"key": "AKIAEXAMPLE1", "auth": {"token": "tok-123456"}, "ports": [8443], "secure": True}])
    text = "key AKIAEXAMPLE1 auth token tok-123456 port 8443 secure True"
    assert r.redact(text) == f"key {MASK} auth token {MASK} port 8443 secure True"


def test_values_too_short_to_be_secrets_are_left_alone():
    r = Redactor(["abc", "", None, 42])
    assert not r
    assert r.redact("abc def 42") == "abc def 42"


def test_redact_data_hides_secrets_in_keys_and_values():
    r = Redactor(["hunter22"])
    assert r.redact_data({"error": "bad password hunter22", "hunter22": ["x hunter22"], "n": 1}) == \
        {"error": f"bad password {MASK}", MASK: [f"x {MASK}"], "n": 1}


def test_the_longest_form_wins_where_forms_overlap():
    r = Redactor(["abcd", "abcd/efgh"])
    assert r.redact("x abcd/efgh y") == f"x {MASK} y"
