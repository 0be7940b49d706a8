# -*- coding: utf-8 -*-
# Copyright: cloudcron contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Redaction of secret values from text: the value itself and the common ways it gets encoded.

Internal to the cloudcron.scheduler collection; standard library only, so the service uses this
file as plugins.module_utils._redact too (for the messages runs store).

Rules:

- A secret is replaced as a whole token only: where it is not glued to a letter, digit or
  underscore on a side where it begins or ends with one. A secret ``list`` hides ``--key list``
  but leaves "listing machines failed" alone.
- Each value is also looked for in the forms it takes when a program quotes or encodes it:
  JSON, YAML and Python string escapes (as in error messages that show a dict or a YAML file),
  percent-encoding (query strings, form bodies) and base64. Lines of a multi-line value
  (the body of a PEM key, not its BEGIN / END lines) are secrets on their own too.
- Values shorter than MIN_CHARS are not looked for: they would match common words and protect
  nothing.
"""

from __future__ import annotations

import base64
import json
import re
from urllib.parse import quote, quote_plus

MASK = "********"
MIN_CHARS = 4
# A line of a multi-line secret is looked for on its own when it is at least this long (a PEM
# body line is 64 characters); shorter lines are mostly the "-----BEGIN ...-----" fences.
MIN_LINE_CHARS = 16
# "-----BEGIN OPENSSH PRIVATE KEY-----" says what follows; it is no secret.
_ARMOUR = re.compile(r"-----[A-Z0-9 ]+-----")
_HEX_ESCAPE = re.compile(r"\\u([0-9a-f]{4})")
_PERCENT = re.compile(r"%[0-9A-F]{2}")


def _word(char):
    return char.isalnum() or char == "_"


def _bytes(text):
    # Text decoded with surrogateescape stands for the bytes it was read from; other lone
    # surrogates have no bytes of their own and are encoded as they are.
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def secret_strings(value):
    """The string leaves of a secret value (a string, or dicts and lists of them); keys are names, not secrets."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from secret_strings(item)
    elif isinstance(value, (list, tuple, set)):
        for item in value:
            yield from secret_strings(item)


def secret_forms(value):
    """Every form of one secret string that redaction looks for (empty when the value is too short)."""
    if not isinstance(value, str) or len(value) < MIN_CHARS:
        return set()
    parts = [value]
    if "\n" in value:
        parts.extend(line.strip() for line in value.splitlines()
                     if len(line.strip()) >= MIN_LINE_CHARS and not _ARMOUR.fullmatch(line.strip()))
    forms = set()
    for part in parts:
        escaped = json.dumps(part)[1:-1]
        forms.update((part, escaped, json.dumps(part, ensure_ascii=False)[1:-1], repr(part)[1:-1],
                      # YAML writes the same \\u escapes with upper-case hex digits
                      _HEX_ESCAPE.sub(lambda m: "\\u" + m.group(1).upper(), escaped)))
        raw = _bytes(part)
        for encoded in (quote(raw, safe=""), quote(raw), quote_plus(raw)):
            forms.add(encoded)
            forms.add(_PERCENT.sub(lambda m: m.group(0).lower(), encoded))
        for b64 in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
            text = b64.decode("ascii")
            forms.add(text)
            forms.add(text.rstrip("="))
    return {form for form in forms if len(form) >= MIN_CHARS}


def _token_pattern(form):
    left = r"(?<!\w)" if _word(form[0]) else ""
    right = r"(?!\w)" if _word(form[-1]) else ""
    return left + re.escape(form) + right


class Redactor:
    """Hides a set of secret values in text; add() more at any time, redact() what is about to be kept."""

    def __init__(self, secrets=()):
        self._forms = set()
        self._patterns = {}
        for value in secrets:
            self.add(value)

    def __bool__(self):
        return bool(self._forms)

    def add(self, value):
        """Treat every string in `value` (a string, or dicts and lists of them) as a secret."""
        for leaf in secret_strings(value):
            self._forms.update(secret_forms(leaf))

    def redact(self, text):
        """`text` with every whole-token occurrence of a secret (in any of its forms) replaced by MASK."""
        if not self._forms or not isinstance(text, str) or not text:
            return text
        # A substring test per form is fast; the regular expression only runs for forms present.
        present = tuple(sorted((form for form in self._forms if form in text), key=lambda f: (-len(f), f)))
        if not present:
            return text
        pattern = self._patterns.get(present)
        if pattern is None:
            pattern = self._patterns[present] = re.compile("|".join(_token_pattern(f) for f in present))
        return pattern.sub(MASK, text)

    def redact_data(self, data):
        """`data` (JSON-like) with every string redacted, keys included."""
        if isinstance(data, str):
            return self.redact(data)
        if isinstance(data, dict):
            return {self.redact_data(k): self.redact_data(v) for k, v in data.items()}
        if isinstance(data, (list, tuple)):
            return [self.redact_data(v) for v in data]
        return data


def redact(text, secrets):
    """`text` with the given secret values hidden (see Redactor)."""
    return Redactor(secrets).redact(text)
