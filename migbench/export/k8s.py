"""`migbench export k8s PLAN -o DIR`: a plan for Kubernetes with the NVIDIA GPU Operator (MIG strategy
`mixed`: each MIG profile is a resource `nvidia.com/mig-<profile>`).

    DIR/mig-parted-config.yaml  a ConfigMap (key config.yaml) with one mig-parted config per node,
                                every GPU of the node listed; the MIG manager applies the config a
                                node's `nvidia.com/mig.config` label names (GPU Operator docs, "GPU
                                Operator with MIG": custom configs through `migManager.config.name`)
    DIR/label-nodes.sh          `kubectl label node <node> nvidia.com/mig.config=<config>` per node,
                                then waits for `nvidia.com/mig.config.state=success`
    DIR/plan-configmap.yaml     the plan file, mounted read-only into every pod (applied server-side:
                                client-side `kubectl apply` copies the object into its last-applied
                                annotation, and annotations hold at most 262,144 bytes)
    DIR/plan-secret.yaml        instead, when the plan carries `env:` values (which may be tokens): the
                                plan in a Secret (the file written 0600), mounted the same way
    DIR/state-pvc.yaml          the PersistentVolumeClaim the pods keep their run directories on
                                (ReadWriteMany, `--state-size`, the cluster's default storage class),
                                unless `--state-pvc CLAIM` names one or `--state emptydir` asks for none
    DIR/jobs/<array>.yaml       one Indexed Job per instance type: completions = its tasks,
                                parallelism <= the plan's count of the type, a nodeSelector on
                                `nvidia.com/mig.config.state: success` (pods wait for the re-cut), node
                                affinity to the plan's nodes of the type, one `nvidia.com/mig-<profile>`
                                each; the pod runs `migbench exec` (JOB_COMPLETION_INDEX picks the task)
    DIR/export.json             what was exported

`check` cross-checks what the API schemas do not (kubernetes-validate checks types and fields):
DNS-1123 names, label keys and values (syntax and length), resource quantities, parallelism within
the plan's counts, and every requested profile present in the mig-parted config of each node the
Job may run on. `migparted.validate` checks the config itself.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from migbench.errors import MigbenchError, UsageError
from migbench.export import migparted
from migbench.export.tasks import Array, arrays
from migbench.fsutil import output_dir, write_text_atomic
from migbench.plan import SECRET_MODE, Plan

MIG_CONFIG_LABEL = "nvidia.com/mig.config"
MIG_STATE_LABEL = "nvidia.com/mig.config.state"
PLAN_MOUNT = "/etc/migbench"
STATE_MOUNT = "/var/lib/migbench/state"
CONFIGMAP_MAX_BYTES = 1_048_576  # the API server's limit on a ConfigMap's data
ANNOTATIONS_MAX_BYTES = 262_144  # the API server's limit on an object's annotations ("metadata.annotations: Too long")
APPLY = "kubectl apply --server-side"
"""How the user's objects are applied: server-side apply keeps no last-applied-configuration
annotation, which client-side apply fills with the whole object (a plan ConfigMap past 256 KiB)."""

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
QUANTITY = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?\d+))?")


def dns_label(text: str, limit: int = 63) -> str:
    """`text` made a DNS-1123 label of at most `limit` characters (a cut name keeps a hash)."""
    s = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-") or "x"
    if len(s) > limit:
        s = s[: limit - 11].rstrip("-") + "-" + hashlib.sha256(text.encode()).hexdigest()[:10]
    return s


def resource_name(profile: str) -> str:
    """The GPU Operator's extended resource for a MIG profile under the mixed strategy:
    `nvidia.com/mig-1g.10gb`; a `+me` profile's '+' (not allowed in a resource name) becomes '.' [U]."""
    return "nvidia.com/mig-" + profile.replace("+", ".")


@dataclass
class K8sJob:
    name: str
    array: str
    profile: str
    resource: str
    completions: int
    parallelism: int
    nodes: list[str]
    manifest: dict[str, Any]


@dataclass
class K8sExport:
    files: list[Path] = field(default_factory=list)
    jobs: list[K8sJob] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    user_files: list[str] = field(default_factory=list)  # what the user applies, in order (relative to DIR)

    @property
    def apply_command(self) -> str:
        return APPLY + "".join(f" -f {f}" for f in self.user_files)


def state_claim(plan: Plan, name: str, namespace: str, size: str) -> dict[str, Any]:
    """The run directories' volume: ReadWriteMany, as the pods of every node write to it; no
    storageClassName, so the cluster's default class serves it (the admin may set one)."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": namespace, "labels": _labels(plan)},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": size}}},
    }


def _labels(plan: Plan, array: str | None = None) -> dict[str, str]:
    out = {"app.kubernetes.io/managed-by": "migbench", "migbench.io/sweep": dns_label(plan.name)}
    if array:
        out["migbench.io/array"] = dns_label(array)
    return out


def config_map(name: str, namespace: str, key: str, text: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace, "labels": labels}, "data": {key: text}}


def secret(name: str, namespace: str, key: str, text: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "stringData": {key: text},
    }


def job(
    plan: Plan, a: Array, *, sha256: str, image: str, namespace: str, plan_cm: str, state_pvc: str | None, workdir: str, plan_secret: bool = False
) -> K8sJob:
    name = dns_label(f"mb-{plan.name}-{a.name}")
    nodes = list(a.per_node) or []
    labels = _labels(plan, a.name)
    command = ["migbench", "exec", f"{PLAN_MOUNT}/plan.yaml", "--array", a.name, "--sha256", sha256, "--state-dir", STATE_MOUNT, "--workdir", workdir]
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "nodeSelector": {MIG_STATE_LABEL: "success"},
        "containers": [
            {
                "name": "run",
                "image": image,
                "command": command,
                "env": [
                    {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                    {"name": "MIGBENCH_ARRAY", "value": a.name},
                ],
                "resources": {"limits": {resource_name(a.profile): 1}},
                "volumeMounts": [{"name": "plan", "mountPath": PLAN_MOUNT, "readOnly": True}, {"name": "state", "mountPath": STATE_MOUNT}],
            }
        ],
        "volumes": [
            {"name": "plan", **({"secret": {"secretName": plan_cm}} if plan_secret else {"configMap": {"name": plan_cm}})},
            {"name": "state", **({"persistentVolumeClaim": {"claimName": state_pvc}} if state_pvc else {"emptyDir": {}})},
        ],
    }
    if nodes:
        pod["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": nodes}]}]
                }
            }
        }
    completions = len(a.tasks)
    parallelism = min(completions, a.count)
    manifest = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {"migbench.io/plan-sha256": sha256, "migbench.io/profile": a.profile, "migbench.io/model": a.model},
        },
        "spec": {
            "completionMode": "Indexed",
            "completions": completions,
            "parallelism": parallelism,
            "backoffLimitPerIndex": int(plan.launch.retries),
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }
    return K8sJob(name, a.name, a.profile, resource_name(a.profile), completions, parallelism, nodes, manifest)


def _state_claim(plan: Plan, out: Path, exp: K8sExport, *, state_pvc: str | None, state: str, state_size: str, namespace: str) -> str | None:
    """The claim the run directories go to: `state_pvc`, else one the export writes (`state` "pvc"),
    else None (`state` "emptydir")."""
    if state not in ("pvc", "emptydir"):
        raise MigbenchError(
            f"--state {state!r}: expected pvc or emptydir", hint="pvc (the default) keeps the run directories; emptydir loses them with each pod"
        )
    if not QUANTITY.fullmatch(state_size):
        raise MigbenchError(f"--state-size {state_size!r} is not a Kubernetes quantity", hint="e.g. 10Gi, 500Gi, 2Ti")
    stale_pvc = out / "state-pvc.yaml"
    if state_pvc is None and state == "pvc":
        state_pvc = dns_label(f"migbench-{plan.name}-state", 253)
        exp.files.append(_write(stale_pvc, _yaml(state_claim(plan, state_pvc, namespace, state_size))))
        exp.user_files.append("state-pvc.yaml")
        exp.notes.append(
            f"the run directories go to PersistentVolumeClaim {state_pvc} (state-pvc.yaml: ReadWriteMany, {state_size}, "
            "the cluster's default storage class; set storageClassName there, or pass --state-pvc CLAIM)"
        )
    elif stale_pvc.exists():  # an earlier export's claim, no longer part of this one
        stale_pvc.unlink()
    if state_pvc is None:
        exp.warnings.append("--state emptydir: each pod's run directory, logs and outcome are lost with the pod (`migbench status` and `logs` see nothing)")
    return state_pvc


def _plan_map(plan: Plan, out: Path, exp: K8sExport, *, plan_text: str, namespace: str) -> tuple[str, bool]:
    """The plan file for the pods: a ConfigMap, or a Secret when the plan carries env: values;
    (its name, whether it is a Secret)."""
    plan_cm = dns_label(f"migbench-{plan.name}-plan", 253)
    hidden = plan.has_env_values()  # env values may be tokens: a Secret, and a file only the user reads
    kind, name = ("Secret", "plan-secret.yaml") if hidden else ("ConfigMap", "plan-configmap.yaml")
    if hidden:
        plan_cm = dns_label(f"migbench-{plan.name}-plan-env", 253)
        cm_text = _yaml(secret(plan_cm, namespace, "plan.yaml", plan_text, _labels(plan)))
        exp.notes.append(f"the plan carries env: values: it goes to the cluster as Secret {plan_cm} ({name}, written 0600), not a ConfigMap")
    else:
        cm_text = _yaml(config_map(plan_cm, namespace, "plan.yaml", plan_text, _labels(plan)))
    for stale in {"plan-secret.yaml", "plan-configmap.yaml"} - {name}:  # an earlier export's, of the other kind
        (out / stale).unlink(missing_ok=True)
    exp.files.append(_write(out / name, cm_text, secret=hidden))
    if len(cm_text.encode()) > ANNOTATIONS_MAX_BYTES:
        exp.warnings.append(
            f"the plan {kind} is {len(cm_text.encode()):,} bytes: a client-side `kubectl apply` of it fails "
            f"(its last-applied annotation holds at most {ANNOTATIONS_MAX_BYTES:,} bytes); apply it server-side, "
            f"as printed ({APPLY}), or with kubectl create"
        )
    exp.user_files += [name, "jobs/"]
    return plan_cm, hidden


def _check_options(*, image: str, namespace: str, operator_namespace: str, state_pvc: str | None) -> None:
    """The names given on the command line, before anything is written: a namespace or claim the API
    refuses, or an image name holding white space, was written into every manifest (a line break
    in it made a block scalar)."""
    problems = name_problems(namespace, "--namespace", label=True) + name_problems(operator_namespace, "--operator-namespace", label=True)
    if state_pvc is not None:
        problems += name_problems(state_pvc, "--state-pvc", label=False)
    if not image or any(c.isspace() or not c.isprintable() for c in image):
        problems.append(f"--image: {image!r} is not an image reference (one word of printable text, e.g. registry/migbench:1.0)")
    if problems:
        raise UsageError(problems[0] if len(problems) == 1 else "; ".join(problems), hint="Kubernetes names are lower-case letters, digits and '-'")


def write(
    plan: Plan,
    out: Path,
    *,
    plan_text: str,
    sha256: str,
    image: str = "migbench:latest",
    namespace: str = "default",
    operator_namespace: str = "gpu-operator",
    state_pvc: str | None = None,
    workdir: str = ".",
    state: str = "pvc",
    state_size: str = "10Gi",
) -> K8sExport:
    """Write the export into `out`. The run directories go to `state_pvc` (an existing claim), else
    to a claim the export writes (`state` "pvc"), else (`state` "emptydir", asked for explicitly)
    to each pod's emptyDir, which loses them with the pod."""
    _check_options(image=image, namespace=namespace, operator_namespace=operator_namespace, state_pvc=state_pvc)
    exp = K8sExport()
    arrs = [a for a in arrays(plan) if a.tasks]
    if not arrs:
        raise MigbenchError(f"plan {plan.name} places no run: nothing to run", hint="check the plan's `unplaced` list")
    if len(plan_text.encode()) > CONFIGMAP_MAX_BYTES - 4096:
        raise MigbenchError(
            f"the plan file is {len(plan_text.encode())} bytes, more than a ConfigMap holds (1 MiB)",
            hint="split the sweep, or put the plan into the image and point the Jobs' `migbench exec` at it",
        )
    nodes = plan.nodes()
    if not nodes:
        exp.notes.append(
            "the plan's fleet names no nodes: the Jobs may run on any node whose MIG config succeeded, and "
            f"the mig-parted config {migparted.config_name(plan, None)} is for every node you label with it"
        )
    output_dir(out, "export directory", ("jobs",))
    mp_name = dns_label(f"migbench-{plan.name}-mig-parted", 253)
    mp = config_map(mp_name, operator_namespace, "config.yaml", migparted.config_text(plan), _labels(plan))
    exp.files.append(_write(out / "mig-parted-config.yaml", _yaml(mp)))
    exp.files.append(_write(out / "label-nodes.sh", label_script(plan, mp_name, operator_namespace), exe=True))
    state_pvc = _state_claim(plan, out, exp, state_pvc=state_pvc, state=state, state_size=state_size, namespace=namespace)
    plan_cm, hidden = _plan_map(plan, out, exp, plan_text=plan_text, namespace=namespace)
    for a in arrs:
        j = job(plan, a, sha256=sha256, image=image, namespace=namespace, plan_cm=plan_cm, state_pvc=state_pvc, workdir=workdir, plan_secret=hidden)
        exp.jobs.append(j)
        exp.files.append(_write(out / "jobs" / f"{a.name}.yaml", _yaml(j.manifest)))
    problems = check(plan, exp.jobs, mp, migparted.config(plan))
    if problems:  # a bug of ours, never the user's: refuse to leave manifests a cluster would reject
        raise MigbenchError("the Kubernetes export failed its own checks:\n  " + "\n  ".join(problems))
    exp.warnings += migparted.placement_warnings(plan)
    doc = {
        "version": 1,
        "kind": "migbench-export-k8s",
        "plan_sha256": sha256,
        "nodes": nodes,
        "mig_parted_configmap": mp_name,
        "configs": {n: migparted.config_name(plan, n) for n in nodes},
        "jobs": [
            {"name": j.name, "array": j.array, "resource": j.resource, "completions": j.completions, "parallelism": j.parallelism, "nodes": j.nodes}
            for j in exp.jobs
        ],
    }
    exp.files.append(_write(out / "export.json", json.dumps(doc, indent=2) + "\n"))
    return exp


def label_script(plan: Plan, configmap: str, operator_namespace: str) -> str:
    nodes = plan.nodes()
    lines = [
        "#!/usr/bin/env bash",
        f"# Re-cut the nodes of plan {plan.name} with the GPU Operator's MIG manager (written by `migbench export k8s`).",
        "# Once: kubectl apply -f mig-parted-config.yaml, and point the MIG manager at it (the operator reads one config map):",
        "#   kubectl patch clusterpolicies.nvidia.com/cluster-policy --type=merge -p "
        + shlex.quote(json.dumps({"spec": {"migManager": {"config": {"name": configmap}}}}, separators=(",", ":"))),
        "# The manager then applies the config a node's nvidia.com/mig.config label names and sets nvidia.com/mig.config.state.",
        "# mig-parted takes counts, not placements; `migbench apply PLAN --node NODE` on the node is the placement-exact path.",
        "set -euo pipefail",
        "TIMEOUT=${TIMEOUT:-900}",
    ]
    targets: list[str | None] = list(nodes) or [None]
    for n in targets:
        cfg = migparted.config_name(plan, n)
        target = shlex.quote(n) if n else '"$1"'
        lines.append(f"kubectl label node {target} {MIG_CONFIG_LABEL}={cfg} --overwrite")
    lines += [
        "for node in " + (" ".join(shlex.quote(n) for n in nodes) if nodes else '"$1"') + "; do",
        "  end=$((SECONDS + TIMEOUT))",
        '  until [ "$(kubectl get node "$node" -o jsonpath=\'{.metadata.labels.nvidia\\.com/mig\\.config\\.state}\')" = success ]; do',
        '    [ $SECONDS -lt $end ] || { echo "node $node: MIG config not applied after $TIMEOUT s" >&2; exit 1; }',
        "    sleep 5",
        "  done",
        '  echo "node $node: MIG config applied"',
        "done",
    ]
    return "\n".join(lines) + "\n"


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:  # the same labels twice are written twice, not as &anchors
        return True


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    style = "|" if "\n" in data and not any(line != line.rstrip() for line in data.splitlines()) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str)


def _yaml(doc: dict[str, Any]) -> str:
    return "# written by `migbench export k8s`\n" + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=120)


def _write(path: Path, text: str, *, exe: bool = False, secret: bool = False) -> Path:
    return write_text_atomic(path, text, mode=SECRET_MODE if secret else 0o755 if exe else 0o644)


# -- the checks the schemas miss ---------------------------------------------------------------


def label_problems(labels: dict[str, Any], where: str) -> list[str]:
    out = []
    for k, v in labels.items():
        prefix, _, name = str(k).rpartition("/")
        if prefix and (len(prefix) > 253 or not DNS_SUBDOMAIN.fullmatch(prefix)):
            out.append(f"{where}: label key {k!r}: prefix is not a DNS-1123 subdomain")
        if not name or len(name) > 63 or not LABEL_NAME.fullmatch(name):
            out.append(f"{where}: label key {k!r}: name must be 1-63 alphanumerics, '-', '_', '.'")
        v = str(v)
        if len(v) > 63 or (v and not LABEL_NAME.fullmatch(v)):
            out.append(f"{where}: label value {v!r} of {k!r}: at most 63 alphanumerics, '-', '_', '.', starting and ending alphanumeric")
    return out


def name_problems(name: Any, where: str, *, label: bool) -> list[str]:
    rx, limit = (DNS_LABEL, 63) if label else (DNS_SUBDOMAIN, 253)
    if not isinstance(name, str) or len(name) > limit or not rx.fullmatch(name):
        return [f"{where}: name {name!r} is not a DNS-1123 {'label' if label else 'subdomain'} (at most {limit})"]
    return []


def check(plan: Plan, jobs: list[K8sJob], mig_parted_cm: dict[str, Any], mp_config: dict[str, Any]) -> list[str]:
    """Every problem the API schemas would not catch (see the module's docstring); [] when none."""
    problems = migparted.validate(mp_config)
    problems += name_problems(mig_parted_cm["metadata"]["name"], "mig-parted ConfigMap", label=False)
    problems += label_problems(mig_parted_cm["metadata"].get("labels", {}), "mig-parted ConfigMap")
    configs = mp_config.get("mig-configs", {})
    for n in plan.nodes():
        cfg = migparted.config_name(plan, n)
        problems += label_problems({MIG_CONFIG_LABEL: cfg}, f"node {n}")
        if cfg not in configs:
            problems.append(f"node {n}: no mig-parted config {cfg}")
        listed = sorted(d for e in configs.get(cfg, []) for d in (e.get("devices") if isinstance(e.get("devices"), list) else []))
        if listed != list(range(len(plan.node_gpus(n)))):
            problems.append(f"node {n}: its config lists GPUs {listed}, not every GPU of the node (0-{len(plan.node_gpus(n)) - 1})")
    counts = {a.name: a.count for a in arrays(plan)}
    for j in jobs:
        m = j.manifest
        where = f"Job {m['metadata'].get('name')}"
        problems += name_problems(m["metadata"].get("name"), where, label=True)  # it is also the pods' job-name label
        problems += label_problems(m["metadata"].get("labels", {}), where)
        spec = m["spec"]
        tmpl = spec["template"]
        problems += label_problems(tmpl["metadata"].get("labels", {}), f"{where} pod template")
        problems += label_problems(tmpl["spec"].get("nodeSelector", {}), f"{where} nodeSelector")
        if tmpl["spec"].get("nodeSelector", {}).get(MIG_STATE_LABEL) != "success":
            problems.append(f"{where}: pods do not wait for {MIG_STATE_LABEL}=success")
        if not 1 <= spec["parallelism"] <= min(spec["completions"], counts.get(j.array, 0)):
            problems.append(f"{where}: parallelism {spec['parallelism']} exceeds the plan's {counts.get(j.array, 0)} instance(s) of its type")
        for c in tmpl["spec"]["containers"]:
            problems += name_problems(c.get("name"), f"{where} container", label=True)
            for res, qty in (c.get("resources", {}).get("limits") or {}).items():
                prefix, _, rname = str(res).rpartition("/")
                if not prefix or not DNS_SUBDOMAIN.fullmatch(prefix) or not LABEL_NAME.fullmatch(rname) or len(rname) > 63:
                    problems.append(f"{where}: {res!r} is not a valid extended resource name")
                if not QUANTITY.fullmatch(str(qty)):
                    problems.append(f"{where}: {res}: {qty!r} is not a quantity")
                elif "." in str(qty) or not str(qty).lstrip("+").isdigit() or int(str(qty)) < 1:
                    problems.append(f"{where}: {res}: an extended resource takes a whole number >= 1, not {qty!r}")
                if str(res).startswith("nvidia.com/mig-"):
                    problems += _profile_on_nodes(plan, configs, j, str(res), where)
        for v in tmpl["spec"].get("volumes", []):
            problems += name_problems(v.get("name"), f"{where} volume", label=True)
    return problems


def _profile_on_nodes(plan: Plan, configs: dict[str, Any], j: K8sJob, res: str, where: str) -> list[str]:
    out = []
    total = 0
    for n in j.nodes or plan.nodes():
        cfg = configs.get(migparted.config_name(plan, n), [])
        have = sum(
            int((e.get("mig-devices") or {}).get(p, 0)) * len(e.get("devices") or [])
            for e in cfg
            for p in (e.get("mig-devices") or {})
            if resource_name(p) == res
        )
        if not have:
            out.append(f"{where}: asks for {res} on node {n}, whose mig-parted config has no such profile")
        total += have
    if j.nodes and total < j.parallelism:
        out.append(f"{where}: parallelism {j.parallelism} but the nodes' configs have {total} x {res}")
    return out
