"""What one rate limit is (`LimitSpec`) and which bucket a request draws from.

A spec's *bucket identity* is its name, key kind and numbers — not its mode. Rules reloaded with
the same identity keep their buckets (a reload must not hand every client a fresh burst), and
moving a limit from `report` to `enforce` keeps the counts gathered during the rollout, which is
the point of report mode. Change any number and the limit starts again from a full bucket.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from clearwall.ratelimit.gcra import Rate, parse_rate

KEY_KINDS = ("client", "destination", "client+destination", "source_ip")
MODES = ("enforce", "report")


def parse_key_kind(value: object) -> str:
    if value not in KEY_KINDS:
        raise ValueError(f"rate limit 'key' must be one of {', '.join(KEY_KINDS)}, not {value!r}")
    return value  # type: ignore[return-value]


def parse_mode(value: object) -> str:
    if value not in MODES:
        raise ValueError(f"rate limit 'mode' must be enforce or report, not {value!r}")
    return value  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """One rate limit: `requests` per `per` seconds plus `burst`, counted per `key`.

    Raises ValueError (one sentence naming the field) on invalid values.
    """

    name: str
    key: str
    requests: int
    per: float
    burst: int = 0
    mode: str = "enforce"
    rate: Rate = field(init=False, repr=False, compare=False)
    bucket_id: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"rate limit 'name' must be a non-empty string, not {self.name!r}")
        parse_key_kind(self.key)
        parse_mode(self.mode)
        requests, per, burst = parse_rate(self.requests, self.per, self.burst)
        object.__setattr__(self, "per", per)
        object.__setattr__(self, "rate", Rate(requests, per, burst))
        object.__setattr__(self, "bucket_id", bucket_id(self.name, self.key, requests, per, burst))

    @property
    def enforced(self) -> bool:
        return self.mode == "enforce"

    def bucket_key(self, *, client: str, destination: str, source_ip: str) -> str:
        """The storage key of the bucket this request draws from under this spec."""
        return f"{self.bucket_id}:{key_value(self.key, client, destination, source_ip)}"


def bucket_id(name: str, key: str, requests: int, per: float, burst: int) -> str:
    # A digest keeps storage keys short and free of the rule name's characters; repr(per) is
    # exact for floats, so 1m and 60s are the same bucket and 60.5s is not.
    text = f"{name}\x00{key}\x00{requests}\x00{per!r}\x00{burst}"
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def key_value(kind: str, client: str, destination: str, source_ip: str) -> str:
    if kind == "client":
        return f"c={client}"
    if kind == "destination":
        return f"d={destination}"
    if kind == "source_ip":
        return f"ip={source_ip}"
    # Length prefix: client "a|b" + destination "c" must not share a bucket with "a" + "b|c".
    return f"cd={len(client)}:{client}|{destination}"
