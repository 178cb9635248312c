"""API version negotiation (pure): pick, per API, the highest version both sides speak.

A broker states its range per API key in its ApiVersions response; kpd's range is the
``ApiSpec``'s. Like the Java client (``NodeApiVersions.latestUsableVersion``) kpd uses the
highest version in the intersection, and an API with no common version is simply absent from the
result — the caller decides whether that API is required.

Imports only ``messages``.
"""

from __future__ import annotations

from collections.abc import Mapping

from .messages import API_BY_KEY, ApiSpec

__all__ = ["broker_ranges", "negotiate", "pick_version"]


def pick_version(api: ApiSpec, broker_min: int, broker_max: int) -> int | None:
    """The highest version in both ``api``'s range and the broker's, or None if they are apart."""
    low = max(api.min_version, broker_min)
    high = min(api.max_version, broker_max)
    return high if low <= high else None


def negotiate(broker_ranges: Mapping[int, tuple[int, int]]) -> dict[int, int]:
    """API key -> version for every API kpd speaks that shares a version with the broker."""
    chosen = {}
    for key, (broker_min, broker_max) in broker_ranges.items():
        api = API_BY_KEY.get(key)
        if api is None:
            continue  # an API kpd never sends
        version = pick_version(api, broker_min, broker_max)
        if version is not None:
            chosen[key] = version
    return chosen


def broker_ranges(api_versions_body: dict) -> dict[int, tuple[int, int]]:
    """The ``{api_key: (min, max)}`` a decoded ApiVersions response advertises."""
    return {
        entry["api_key"]: (entry["min_version"], entry["max_version"])
        for entry in api_versions_body["api_keys"]
    }
