"""The runtime keys every sidemesh Envoy starts with (its bootstrap's `layered_runtime`).

One place, because validation must check what the proxies enforce: a regex validation lets
through must compile in every proxy. Envoy's own default RE2 program-size limit is 100, which
refuses ordinary patterns such as `[a-z0-9]{1,63}` (size 192); Istio raises it to 32768 in its
bootstrap, and so do we, so a VirtualService valid for Istio is valid here.
"""

from __future__ import annotations

from typing import Any, Final

RE2_MAX_PROGRAM_SIZE: Final = 32768
# Above this Envoy only counts the regex (`re2.exceeded_warn_level`); Istio's value too.
RE2_WARN_PROGRAM_SIZE: Final = 1024


def layered_runtime() -> dict[str, Any]:
    """The bootstrap's `layered_runtime`: our static keys, then an admin layer (as Envoy has
    with no runtime configured, so `/runtime_modify` keeps working for operators)."""
    return {
        "layers": [
            {
                "name": "sidemesh",
                "static_layer": {
                    "re2.max_program_size.error_level": RE2_MAX_PROGRAM_SIZE,
                    "re2.max_program_size.warn_level": RE2_WARN_PROGRAM_SIZE,
                },
            },
            {"name": "admin", "admin_layer": {}},
        ]
    }
