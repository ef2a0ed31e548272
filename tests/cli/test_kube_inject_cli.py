"""`sidemesh kube-inject` as a user runs it: files and stdin, -o, errors that point at the
file and line, warnings on stderr, and objects it must not touch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner, Result

from sidemesh.cli.kube_inject import kube_inject

POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: shop
spec:
  containers:
  - name: web
    image: nginx:1.27
"""

SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports:
  - {port: 80, targetPort: 8080}
"""


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(kube_inject, list(args), input=input)


def documents(text: str) -> list[Any]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


def container_names(pod: dict[str, Any]) -> list[str]:
    return [c["name"] for c in pod["spec"]["containers"]]


def test_reads_stdin_and_writes_stdout() -> None:
    result = run("-f", "-", input=POD)
    assert result.exit_code == 0, result.stderr
    (pod,) = documents(result.stdout)
    assert container_names(pod) == ["web", "istio-proxy"]
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["istio-init"]


def test_writes_to_output_file_only(tmp_path: Path) -> None:
    source, output = tmp_path / "in.yaml", tmp_path / "out.yaml"
    source.write_text(POD, encoding="utf-8")
    result = run("-f", str(source), "-o", str(output))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    (pod,) = documents(output.read_text(encoding="utf-8"))
    assert "istio-proxy" in container_names(pod)


def test_other_kinds_pass_through_unchanged(tmp_path: Path) -> None:
    others = [
        SERVICE,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {a: b}\n",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels: {istio.io/rev: x}\n",
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\nspec:\n  template: {}\n",
    ]
    source = tmp_path / "mixed.yaml"
    source.write_text("---\n".join([*others, POD]), encoding="utf-8")
    result = run("-f", str(source))
    assert result.exit_code == 0, result.stderr
    out = documents(result.stdout)
    assert out[:4] == [yaml.safe_load(o) for o in others]
    assert "istio-proxy" in container_names(out[4])
    assert "skipping" not in result.stderr  # kinds without pods are not worth a message


def test_empty_documents_are_dropped(tmp_path: Path) -> None:
    source = tmp_path / "gaps.yaml"
    source.write_text("---\n---\n" + SERVICE + "---\n# only a comment\n", encoding="utf-8")
    result = run("-f", str(source))
    assert result.exit_code == 0, result.stderr
    assert documents(result.stdout) == [yaml.safe_load(SERVICE)]


def test_host_network_warns_on_stderr_and_leaves_pod_alone(tmp_path: Path) -> None:
    pod = yaml.safe_load(POD)
    pod["spec"]["hostNetwork"] = True
    source = tmp_path / "host.yaml"
    source.write_text(yaml.safe_dump(pod), encoding="utf-8")
    result = run("-f", str(source))
    assert result.exit_code == 0, result.stderr
    assert documents(result.stdout) == [pod]
    assert "Pod/web" in result.stderr and "hostNetwork" in result.stderr
    assert "skipping" not in result.stdout


def test_opt_out_is_reported_on_stderr() -> None:
    pod = yaml.safe_load(POD)
    pod["metadata"]["labels"] = {"sidecar.istio.io/inject": "false"}
    result = run("-f", "-", input=yaml.safe_dump(pod))
    assert result.exit_code == 0, result.stderr
    assert documents(result.stdout) == [pod]
    assert "skipping injection of Pod/web" in result.stderr


def test_misplaced_inject_annotation_warns() -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "api", "annotations": {"sidecar.istio.io/inject": "false"}},
        "spec": {"template": {"spec": {"containers": [{"name": "api", "image": "x"}]}}},
    }
    result = run("-f", "-", input=yaml.safe_dump(deployment))
    assert result.exit_code == 0, result.stderr
    assert "spec.template.metadata" in result.stderr
    (out,) = documents(result.stdout)
    assert "istio-proxy" in container_names(out["spec"]["template"])  # it had no effect


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    source = tmp_path / "broken.yaml"
    # Document 2 starts on line 11; its bad indentation is on line 14.
    broken = "kind: Pod\nmetadata:\n  name: x\n    bad: indent\n"
    source.write_text(POD + "---\n" + broken, encoding="utf-8")
    output = tmp_path / "out.yaml"
    result = run("-f", str(source), "-o", str(output))
    assert result.exit_code != 0
    assert f"{source}:14" in result.stderr
    assert "document 2" in result.stderr
    assert not output.exists()


def test_malformed_yaml_on_stdin_is_named() -> None:
    result = run("-f", "-", input="kind: [unclosed\n")
    assert result.exit_code != 0
    assert "<stdin>:" in result.stderr


def test_missing_file() -> None:
    result = run("-f", "/nonexistent/manifest.yaml")
    assert result.exit_code != 0
    assert "/nonexistent/manifest.yaml" in result.stderr
    assert "cannot read" in result.stderr


def test_revision_names_the_control_plane() -> None:
    result = run("-f", "-", "--revision", "canary", input=POD)
    assert result.exit_code == 0, result.stderr
    (pod,) = documents(result.stdout)
    assert pod["metadata"]["annotations"]["istio.io/rev"] == "canary"
    proxy = next(c for c in pod["spec"]["containers"] if c["name"] == "istio-proxy")
    env = {e["name"]: e.get("value") for e in proxy["env"]}
    assert env["CA_ADDR"] == "istiod-canary.istio-system.svc:15012"


def test_bad_values_file_is_named(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text("global:\n  proxy:\n    statusPort: lots\n", encoding="utf-8")
    result = run("-f", "-", "--values", str(values), input=POD)
    assert result.exit_code != 0
    assert str(values) in result.stderr and "statusPort" in result.stderr


def test_unreadable_injector_config_is_named(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("policy: sometimes\n", encoding="utf-8")
    result = run("-f", "-", "--injector-config", str(config), input=POD)
    assert result.exit_code != 0
    assert str(config) in result.stderr and "policy" in result.stderr
