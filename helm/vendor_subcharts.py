"""Rebuild helm/insitu-node/charts/*.tgz, the node chart's vendored subcharts, byte for byte.

    python helm/vendor_subcharts.py --z2jh <zero-to-jupyterhub-k8s checkout> \
        --dask-gateway <dask-gateway-2026.3.0.tgz as published>

The chart renders offline (tests, air-gapped sites) because its two subcharts
are committed as archives; helm/insitu-node/Chart.lock records what they are
built from and their sha256 digests, and tests/test_helm_subcharts.py checks
the archives against it. Both archives are written deterministically (sorted
members, fixed owners and times), so running this again gives the same bytes.

- Zero to JupyterHub: the chart folder of the release tag (PINS below), packaged
  as the project's release tooling (chartpress) does: chart version and image
  tags set to the release, values.schema.json generated from
  values.schema.yaml without descriptions. (The published archives are not
  reachable from the machines this project is built on.)
- dask-gateway: the published archive, checked against its published digest,
  plus one insitu patch: the upstream chart has no securityContext values for
  its gateway, controller and traefik pods, so they could not run non-root
  with seccomp and no capabilities. The patch adds ``podSecurityContext`` and
  ``containerSecurityContext`` to each (values, schema, templates), and
  ``controller.command``: the controller's program (insitu's, which adds a
  NetworkPolicy per cluster: insitu.hub.dask_controller), nothing else; the
  version gets the build suffix ``+insitu.1``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

import yaml

CHARTS = Path(__file__).resolve().parent / "insitu-node" / "charts"
PINS = {
    "jupyterhub": {
        "version": "4.4.0",
        "source": "github.com/jupyterhub/zero-to-jupyterhub-k8s tag 4.4.0",
        "commit": "",  # filled from the checkout, checked against the tag
    },
    "dask-gateway": {
        "version": "2026.3.0",
        "vendored_version": "2026.3.0+insitu.1",
        "source": "helm.dask.org dask-gateway-2026.3.0.tgz",
        "sha256": "f9b0bd1c5b22238b5e42cc07eaa8acbbe4cdeede52c91ddb1f4b092165c0f0af",
    },
}


def _archive(files: dict[str, bytes], path: Path) -> str:
    """Write ``files`` (member name -> bytes) as a reproducible .tgz; return its sha256."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            info.mode = 0o644
            info.mtime = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(files[name]))
    data = gzip.compress(raw.getvalue(), compresslevel=9, mtime=0)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _clean_schema(node: dict) -> None:
    """What z2jh's tools/generate-json-schema.py does: drop descriptions."""
    node.pop("description", None)
    for value in (node.get("properties") or {}).values():
        if isinstance(value, dict):
            _clean_schema(value)


def build_z2jh(checkout: Path) -> tuple[dict[str, bytes], str]:
    pin = PINS["jupyterhub"]
    tag = pin["version"]
    commit = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", f"{tag}^{{commit}}"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    tar_bytes = subprocess.run(
        ["git", "-C", str(checkout), "archive", "--format=tar", commit, "jupyterhub"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        for member in tar.getmembers():
            if member.isfile():
                handle = tar.extractfile(member)
                assert handle is not None
                files[member.name] = handle.read()
    chart = files["jupyterhub/Chart.yaml"].decode()
    assert "version: 0.0.1-set.by.chartpress" in chart
    files["jupyterhub/Chart.yaml"] = chart.replace(
        "version: 0.0.1-set.by.chartpress", f"version: {tag}"
    ).encode()
    values = files["jupyterhub/values.yaml"].decode()
    assert values.count('tag: "set-by-chartpress"') == 5
    files["jupyterhub/values.yaml"] = values.replace(
        'tag: "set-by-chartpress"', f'tag: "{tag}"'
    ).encode()
    schema = yaml.safe_load(files.pop("jupyterhub/values.schema.yaml"))
    _clean_schema(schema)
    files["jupyterhub/values.schema.json"] = json.dumps(schema).encode()
    return files, commit


_SECURITY_VALUES = """\
  # insitu patch: pod- and container-level securityContext of this pod.
  podSecurityContext: {}
  containerSecurityContext: {}
"""


def _pod_security(component: str, indent_anchor: str) -> str:
    return (
        f"      {{{{- with .Values.{component}.podSecurityContext }}}}\n"
        "      securityContext:\n"
        "        {{- . | toYaml | nindent 8 }}\n"
        "      {{- end }}\n" + indent_anchor
    )


def _container_security(component: str) -> str:
    return (
        f"          {{{{- with .Values.{component}.containerSecurityContext }}}}\n"
        "          securityContext:\n"
        "            {{- . | toYaml | nindent 12 }}\n"
        "          {{- end }}\n"
    )


def _replace_once(text: str, old: str, new: str, where: str) -> str:
    assert text.count(old) == 1, f"{where}: the patch anchor is not unique: {old!r}"
    return text.replace(old, new)


def build_dask_gateway(archive: Path) -> dict[str, bytes]:
    pin = PINS["dask-gateway"]
    data = archive.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    assert digest == pin["sha256"], f"{archive}: sha256 {digest}, published {pin['sha256']}"
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():
            if member.isfile():
                handle = tar.extractfile(member)
                assert handle is not None
                files[member.name] = handle.read()
    root = "dask-gateway/"
    text = {n: files[n].decode() for n in files}
    chart = root + "Chart.yaml"
    text[chart] = _replace_once(
        text[chart], f"version: {pin['version']}\n", f"version: {pin['vendored_version']}\n", chart
    )
    values = root + "values.yaml"
    for anchor in (
        "  # Resource requests/limits for the gateway-server pod.\n  resources: {}\n",
        "  # Resource requests/limits for the controller pod\n  resources: {}\n",
        "  # Resource requests/limits for the proxy pods\n  resources: {}\n",
    ):
        text[values] = _replace_once(text[values], anchor, anchor + _SECURITY_VALUES, values)
    schema = json.loads(text[root + "values.schema.json"])
    for component in ("gateway", "controller", "traefik"):
        props = schema["properties"][component]["properties"]
        props["podSecurityContext"] = {"type": "object"}
        props["containerSecurityContext"] = {"type": "object"}
    schema["properties"]["controller"]["properties"]["command"] = {
        "type": ["array", "null"],
        "items": {"type": "string"},
    }
    anchor = "  # Resource requests/limits for the controller pod\n  resources: {}\n"
    text[values] = _replace_once(
        text[values],
        anchor,
        anchor + "  # insitu patch: the controller's command (empty: dask-gateway-server's).\n"
        "  command: []\n",
        values,
    )
    name = root + "templates/controller/deployment.yaml"
    upstream_args = (
        "          args:\n"
        "            - dask-gateway-server\n"
        "            - kube-controller\n"
        "            - --config\n"
        "            - /etc/dask-gateway/dask_gateway_config.py\n"
    )
    text[name] = _replace_once(
        text[name],
        upstream_args,
        "          {{- with .Values.controller.command }}\n"
        "          command:\n"
        "            {{- toYaml . | nindent 12 }}\n"
        "          args:\n"
        "            - --config\n"
        "            - /etc/dask-gateway/dask_gateway_config.py\n"
        "          {{- else }}\n" + upstream_args + "          {{- end }}\n",
        name,
    )
    text[root + "values.schema.json"] = json.dumps(schema, indent=2)
    for component, template, pull in (
        ("gateway", "gateway/deployment.yaml", ".Values.gateway.image.pullPolicy"),
        ("controller", "controller/deployment.yaml", ".Values.controller.image.pullPolicy"),
        ("traefik", "traefik/deployment.yaml", ".Values.gateway.image.pullPolicy"),
    ):
        name = root + "templates/" + template
        body = text[name]
        if component == "traefik":
            body = _replace_once(
                body,
                "          securityContext:\n            runAsUser: 1000\n            runAsGroup: 1000\n",
                _container_security(component),
                name,
            )
            body = _replace_once(
                body,
                "      terminationGracePeriodSeconds: 60\n",
                _pod_security(component, "      terminationGracePeriodSeconds: 60\n"),
                name,
            )
        else:
            pull_line = f"          imagePullPolicy: {{{{ {pull} }}}}\n"
            body = _replace_once(body, pull_line, pull_line + _container_security(component), name)
            body = _replace_once(
                body, "      volumes:\n", _pod_security(component, "      volumes:\n"), name
            )
        text[name] = body
    return {n: t.encode() for n, t in text.items()}


def helm_lock_digest(dependencies: list[dict]) -> str:
    """Helm's Chart.lock digest (HashReq): sha256 of the JSON of [requirements, locked]."""
    reqs = []
    for dep in dependencies:
        req = {"name": dep["name"]}
        if dep.get("version"):
            req["version"] = dep["version"]
        req["repository"] = dep["repository"]
        if dep.get("condition"):
            req["condition"] = dep["condition"]
        reqs.append(req)
    locked = [{k: d[k] for k in ("name", "version", "repository")} for d in dependencies]
    data = json.dumps([reqs, locked], separators=(",", ":"))
    return "sha256:" + hashlib.sha256(data.encode()).hexdigest()


def write_lock(digests: dict[str, str]) -> None:
    """Chart.lock (as `helm dependency update` writes it) and SUBCHARTS.sha256."""
    node = CHARTS.parent
    dependencies = yaml.safe_load((node / "Chart.yaml").read_text())["dependencies"]
    lock = {
        "dependencies": [{k: d[k] for k in ("name", "version", "repository")} for d in dependencies],
        "digest": helm_lock_digest(dependencies),
        "generated": "2026-12-03T12:00:00Z",
    }
    (node / "Chart.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    (node / "SUBCHARTS.sha256").write_text(
        "".join(f"{digest}  charts/{name}\n" for name, digest in sorted(digests.items()))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--z2jh", type=Path, required=True, help="a zero-to-jupyterhub-k8s clone")
    parser.add_argument(
        "--dask-gateway", type=Path, required=True, help="the published dask-gateway archive"
    )
    args = parser.parse_args()
    CHARTS.mkdir(exist_ok=True)
    for old in CHARTS.glob("*.tgz"):
        old.unlink()
    z2jh_files, commit = build_z2jh(args.z2jh)
    z2jh_name = f"jupyterhub-{PINS['jupyterhub']['version']}.tgz"
    dg_pin = PINS["dask-gateway"]
    dg_name = f"dask-gateway-{dg_pin['vendored_version']}.tgz"
    digests = {
        z2jh_name: _archive(z2jh_files, CHARTS / z2jh_name),
        dg_name: _archive(build_dask_gateway(args.dask_gateway), CHARTS / dg_name),
    }
    write_lock(digests)
    print(json.dumps({"z2jh_commit": commit, "archives": digests}, indent=2))


if __name__ == "__main__":
    main()
