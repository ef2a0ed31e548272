"""Traffic capture: the iptables rules that send a pod's TCP through its sidecar proxy.

`config` parses istio-iptables flags, `rules` builds the rule set (pure), `restore` plans the
iptables-restore transaction against the current tables (pure), `apply` runs it (I/O).
"""

from sidemesh.capture.apply import CaptureError, apply_capture, cleanup_capture
from sidemesh.capture.config import CaptureConfig, InterceptionMode, parse_capture_config
from sidemesh.capture.rules import RuleSet, build_capture_rules

__all__ = [
    "CaptureConfig",
    "CaptureError",
    "InterceptionMode",
    "RuleSet",
    "apply_capture",
    "build_capture_rules",
    "cleanup_capture",
    "parse_capture_config",
]
