"""The `sidemesh` command. Subcommands live in their own modules and load on first use, so
`sidemesh iptables` in an init container does not import the webhook server or gRPC."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import click

# command name -> "module:attribute" of a click.Command
_COMMANDS: dict[str, str] = {
    "kube-inject": "sidemesh.cli.kube_inject:kube_inject",
    "check-inject": "sidemesh.cli.check_inject:check_inject",
    "discovery": "sidemesh.cli.discovery:discovery",
    "iptables": "sidemesh.cli.iptables:iptables",
    "agent": "sidemesh.cli.agent:agent",
    "proxy-status": "sidemesh.cli.proxy_status:proxy_status",
    "install": "sidemesh.cli.install:install",
    "uninstall": "sidemesh.cli.install:uninstall",
    "tag": "sidemesh.cli.tag:tag",
    "analyze": "sidemesh.cli.analyze:analyze",
    "injector": "sidemesh.cli.injector:injector",
    "local": "sidemesh.cli.local:local",
    "demo": "sidemesh.cli.demo:demo",
    "validate": "sidemesh.cli.validate:validate_command",
    "authz": "sidemesh.cli.authz:authz",
    "upgrade-sidecars": "sidemesh.cli.upgrade:upgrade_sidecars",
    "restart-stale": "sidemesh.cli.restart_stale:restart_stale",
    "dashboard": "sidemesh.cli.dashboard:dashboard",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        # A command whose module is absent from this build is not offered (rather than
        # breaking `sidemesh --help`).
        available = {n for n, t in _COMMANDS.items() if importlib.util.find_spec(t.split(":")[0])}
        return sorted(available | set(super().list_commands(ctx)))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module_name, attribute = target.split(":")
        command: Any = getattr(importlib.import_module(module_name), attribute)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sidemesh")
def cli() -> None:
    """sidemesh: automatic sidecar proxy injection and the service mesh around it."""


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
