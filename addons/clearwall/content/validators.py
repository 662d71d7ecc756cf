"""Post-match checks that cut false positives: checksums, ranges, entropy, placeholders.

A validator takes the matched text (the `secret` group when the pattern has one) and says whether
it is a real finding. `parse_validator` turns the rule-file spelling (`luhn`, `entropy:3.5`) into
one; it raises ValueError for an unknown name so a bad rule file is refused at load time.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections import Counter
from collections.abc import Callable

Validator = Callable[[str], bool]

# Substrings that documentation, templates and tests use instead of a real credential.
_PLACEHOLDER_WORDS = (
    "example", "sample", "placeholder", "dummy", "your", "xxxx", "changeme", "change_me",
    "redacted", "replace", "insert", "fake", "foobar", "secret_here", "token_here", "key_here",
    "<", ">", "${", "{{", "%s", "***", "...", "open sesame", "aladdin",
)


# Whole values that stand for "a password goes here".
_PLACEHOLDER_VALUES = frozenset(
    {"password", "passwd", "pass", "secret", "pwd", "token", "apikey", "api_key", "user", "username",
     "null", "none", "undefined", "true", "false", "test", "testing", "admin", "root", "guest"}
)


def is_placeholder(value: str) -> bool:
    """True for documented dummy values: EXAMPLE keys, `xxxx`, `<token>`, `your-api-key`, runs."""
    low = value.lower()
    if low in _PLACEHOLDER_VALUES or any(word in low for word in _PLACEHOLDER_WORDS):
        return True
    # password1, secret123!, my-client-secret, my_api_key: a placeholder word dressed up.
    if low.rstrip("0123456789!.") in _PLACEHOLDER_VALUES or low.startswith(("my-", "my_")):
        return True
    # Template and variable references: {password}, $DB_PASS, %(password)s.
    if "{" in value or "}" in value or value.startswith("$") or "%(" in value:
        return True
    core = [c for c in low if c.isalnum()]
    if len(core) >= 8 and len(set(core)) <= 2:  # aaaaaaaa, 00000000, abababab
        return True
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    return len(core) >= 8 and "".join(core) in digits * 2  # 12345678, abcdefgh


def shannon_entropy(value: str) -> float:
    """Bits per character of `value` (0 for empty)."""
    if not value:
        return 0.0
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in Counter(value).values())


# Card numbers published by payment providers for test mode: documentation, not cardholder data.
_TEST_PANS = frozenset(
    {"4111111111111111", "4242424242424242", "4000056655665556", "5555555555554444",
     "5105105105105100", "378282246310005", "371449635398431", "6011111111111117",
     "3530111333300000", "4012888888881881", "2223003122003222", "5200828282828210"}
)


_DOUBLED = str.maketrans("0123456789", "0246813579")  # each digit doubled, digits summed


def luhn(value: str) -> bool:
    """Payment card numbers: 13-19 digits (spaces/dashes allowed), Luhn checksum, not one digit,
    not a published test-mode number. Written with str methods: it runs once per candidate."""
    digits = value.replace(" ", "").replace("-", "")
    if not (13 <= len(digits) <= 19 and digits.isdigit() and digits.isascii()):
        return False
    if digits.count(digits[0]) == len(digits) or digits in _TEST_PANS:
        return False
    total = sum(map(int, digits[-1::-2])) + sum(map(int, digits[-2::-2].translate(_DOUBLED)))
    return total % 10 == 0


# Issuer prefixes and lengths (Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay).
_CARD_ISSUERS = re.compile(
    r"4[0-9]{12}(?:[0-9]{3}){0,2}|(?:5[1-5][0-9]{2}|222[1-9]|22[3-9][0-9]|2[3-6][0-9]{2}|27[01][0-9]|2720)[0-9]{12}"
    r"|3[47][0-9]{13}|6(?:011|5[0-9]{2}|4[4-9][0-9])[0-9]{12,15}|35(?:2[89]|[3-8][0-9])[0-9]{12,15}"
    r"|3(?:0[0-5]|[689][0-9])[0-9]{11,16}|62[0-9]{14,17}"
)


def card(value: str) -> bool:
    """A payment card number: a known issuer prefix and length, and a valid Luhn checksum."""
    digits = value.replace(" ", "").replace("-", "")
    return bool(_CARD_ISSUERS.fullmatch(digits)) and luhn(digits)


def mod97(value: str) -> bool:
    """IBAN: ISO 13616 mod-97 check over the rearranged account number."""
    iban = "".join(value.split()).upper()
    if not 15 <= len(iban) <= 34 or not iban[:2].isalpha() or not iban[2:4].isdigit():
        return False
    if not iban.isalnum() or not iban.isascii():
        return False
    rearranged = iban[4:] + iban[:4]
    number = "".join(str(int(c, 36)) for c in rearranged)
    return int(number) % 97 == 1


# Numbers the SSA never issues or that are famous specimens printed everywhere.
_SSN_SPECIMENS = {"078051120", "219099999", "123456789", "111111111", "999999999"}


def ssn(value: str) -> bool:
    """US SSN: area not 000/666/9xx, group not 00, serial not 0000, not a specimen."""
    digits = "".join(c for c in value if c.isdigit())
    if len(digits) != 9 or digits in _SSN_SPECIMENS:
        return False
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def jwt(value: str) -> bool:
    """A JWT: the first base64url segment decodes to a JSON object naming an `alg`."""
    head = value.split(".", 1)[0]
    try:
        raw = base64.urlsafe_b64decode(head + "=" * (-len(head) % 4))
        obj = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return False
    return isinstance(obj, dict) and "alg" in obj


def not_placeholder(value: str) -> bool:
    return not is_placeholder(value)


_IDENTIFIER = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*(?:(?:\.|->|::)[A-Za-z_$][A-Za-z0-9_$]*)*")
_ENV_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
_TYPE_NAME = re.compile(
    r"[A-Z][A-Za-z0-9_]*(?:Key|Keys|Type|Types|Error|Exception|Class|Interface|Config|Settings|Provider"
    r"|Handler|Manager|Factory|Info|Data|Model|Schema|Response|Request|Dict|List|Str|String|Bytes|Token)"
)


def generic_secret(value: str) -> bool:
    """A value assigned to `password=`/`api_key=`: random-looking, not code, not a placeholder.

    Code and configuration assign names rather than values (`settings.API_KEY`, `OPENAI_KEY`,
    `self.password`): a pure identifier path is not a leak. A real secret mixes at least two of
    lower case, upper case, digits and symbols and carries close to 3 bits of entropy per character.
    """
    if is_placeholder(value) or _ENV_NAME.fullmatch(value) or "://" in value:
        return False  # URLs are judged by the URL patterns (credentials in the authority part)
    if value.startswith(("/", "~/", "./", "../")):
        return False  # a path: PWD=/home/app in an environment dump
    if _IDENTIFIER.fullmatch(value) and ("." in value or not any(c.isdigit() for c in value)):
        return False  # code: base64.b64encode, ed25519.Ed25519PrivateKey, self.password
    if _TYPE_NAME.fullmatch(value):
        return False  # a type annotation: `private_key: Ed25519PrivateKey`
    kinds = sum(
        (any(c.islower() for c in value), any(c.isupper() for c in value),
         any(c.isdigit() for c in value), any(not c.isalnum() for c in value))
    )
    # A short string cannot reach 3 bits/char (8 distinct characters give exactly 3).
    return kinds >= 2 and shannon_entropy(value) >= min(3.0, 0.85 * math.log2(len(value)))


def basic_auth(value: str) -> bool:
    """An HTTP Basic credential: base64 of `user:password` with a real-looking password."""
    try:
        raw = base64.b64decode(value + "=" * (-len(value) % 4), validate=True).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return False
    user, sep, password = raw.partition(":")
    return bool(sep) and len(password) >= 4 and not is_placeholder(password) and not is_placeholder(raw)


def entropy(threshold: float) -> Validator:
    """Random-looking values only: at least `threshold` bits/char, not a placeholder."""

    def check(value: str) -> bool:
        return shannon_entropy(value) >= threshold and not is_placeholder(value)

    return check


_NAMED: dict[str, Validator] = {
    "luhn": luhn,
    "card": card,
    "mod97": mod97,
    "ssn": ssn,
    "jwt": jwt,
    "not_placeholder": not_placeholder,
    "generic_secret": generic_secret,
    "basic_auth": basic_auth,
}


def parse_validator(spec: str) -> Validator:
    """`luhn` | `card` | `mod97` | `ssn` | `jwt` | `not_placeholder` | `generic_secret` | `entropy:<bits>`."""
    name, _, arg = spec.strip().partition(":")
    if name == "entropy":
        try:
            threshold = float(arg)
        except ValueError:
            raise ValueError(f"validator {spec!r}: entropy needs a number, as in entropy:3.5") from None
        if not 0.0 < threshold <= 8.0:
            raise ValueError(f"validator {spec!r}: entropy threshold must be in (0, 8]")
        return entropy(threshold)
    if arg or name not in _NAMED:
        known = ", ".join([*_NAMED, "entropy:<bits>"])
        raise ValueError(f"unknown validator {spec!r} (known: {known})")
    return _NAMED[name]
