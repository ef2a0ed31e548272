"""`sidemesh validate -f FILE...` (like `istioctl validate`): every Istio object of files,
directories and stdin checked by the same validators as the registries; one line per object,
problems naming file, document, kind/name and field path; exit 1 if any is invalid."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner, Result

from sidemesh.cli.main import cli

VALID = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 75
    - destination: {host: reviews, subset: v2}
      weight: 25
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: bookinfo}
spec: {mtls: {mode: STRICT}}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: bookinfo}
spec: {ports: [{port: 9080}]}
"""

INVALID = """\
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata: {name: ingress, namespace: bookinfo}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: bookinfo}
spec:
  host: ratings
  subsets:
  - {name: v1}
  - {name: v1}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: bad, namespace: bookinfo}
spec: {mtls: {mode: MUTUAL}}
"""


def _run(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["validate", *args], input=stdin)


def test_valid_file_succeeds_and_skips_what_it_does_not_know(tmp_path: Path) -> None:
    path = tmp_path / "bookinfo.yaml"
    path.write_text(VALID)
    result = _run("-f", str(path))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"{path} document 1 VirtualService bookinfo/reviews: validation succeed",
        f"{path} document 2 DestinationRule bookinfo/reviews: validation succeed",
        f"{path} document 3 PeerAuthentication bookinfo/default: validation succeed",
        f"{path} document 4 Service bookinfo/reviews: skipped: unknown kind",
    ]


def test_invalid_objects_are_named_with_their_field_and_fail(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(INVALID)
    result = _run("-f", str(path))
    assert result.exit_code == 1
    assert f"{path} document 1 Gateway bookinfo/ingress: validation succeed" in result.stdout
    errors = result.stderr.splitlines()
    assert (
        f"{path} document 2 DestinationRule bookinfo/ratings: spec.subsets[1].name: "
        "duplicate subset name 'v1'"
    ) in errors
    assert [e for e in errors if e.startswith(f"{path} document 3 PeerAuthentication")]
    assert errors[-1] == "Error: 2 invalid object(s)"


def test_directories_and_stdin(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(VALID)
    (tmp_path / "b.yml").write_text(INVALID)
    (tmp_path / "notes.txt").write_text("not a manifest")
    result = _run("-f", str(tmp_path), "-f", "-", "--quiet", stdin=VALID)
    assert result.exit_code == 1
    assert result.stdout == ""  # --quiet: problems only
    assert {line.split(" document ")[0] for line in result.stderr.splitlines()[:-1]} == {
        str(tmp_path / "b.yml")
    }
    assert _run("-f", "-", stdin=VALID).exit_code == 0


def test_unreadable_input_fails_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    result = _run("-f", str(missing))
    assert result.exit_code == 1
    assert str(missing) in result.stderr
    empty = tmp_path / "empty.yaml"
    empty.write_text("---\n")
    result = _run("-f", str(empty))
    assert result.exit_code == 1
    assert "no objects passed to validate" in result.stderr


def test_list_items_are_validated_one_by_one(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text(
        "apiVersion: v1\nkind: List\nitems:\n"
        "- apiVersion: networking.istio.io/v1\n  kind: Sidecar\n"
        "  metadata: {name: default, namespace: bookinfo}\n"
        "  spec: {egress: [{hosts: ['reviews']}]}\n"
    )
    result = _run("-f", str(path))
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == (
        f"{path} document 1 item 1 Sidecar bookinfo/default: spec.egress[0].hosts[0]: "
        "'reviews' must be of the form namespace/dnsName"
    )


def test_validate_is_a_sidemesh_command() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert "validate" in result.output
