"""`export k8s` and `export mig-parted`, validated offline: kubernetes-validate --strict on every
manifest, mig-parted's config rules (ported), and the checks the schemas miss."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from migbench.export import k8s, migparted
from migbench.export.execute import prepare
from migbench.export.tasks import arrays
from migbench.plan import Plan, PlanInstance
from tests.support.cli import migbench
from tests.support.statedir import sd_at

K8S_VERSION = "1.30.0"


def kubernetes_validate() -> list[str]:
    exe = shutil.which("kubernetes-validate") or str(Path(sys.executable).parent / "kubernetes-validate")
    if not Path(exe).exists():
        pytest.skip("kubernetes-validate is not installed (pip install '.[test]')")
    return [exe]


@pytest.fixture(scope="module")
def exported(two_nodes, tmp_path_factory):  # type: ignore[no-untyped-def]
    plan, path = two_nodes
    out = tmp_path_factory.mktemp("k8s")
    r = migbench("export", "k8s", str(path), "-o", str(out), "--image", "example.org/lab/train:1", "--state-pvc", "runs")
    assert r.returncode == 0, r.stderr
    return plan, path, out, r


def test_every_manifest_passes_kubernetes_validate_strict(exported):
    _, _, out, _ = exported
    files = sorted(str(p) for p in [*out.glob("*.yaml"), *out.glob("jobs/*.yaml")])
    assert len(files) == 2 + len(list(out.glob("jobs/*.yaml"))) >= 4
    r = subprocess.run([*kubernetes_validate(), "--strict", "-k", K8S_VERSION, *files], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("passed") == len(files)


def test_the_mig_parted_config_lists_every_gpu_of_each_node_and_passes_its_rules(exported):
    plan, _, out, _ = exported
    cm = yaml.safe_load((out / "mig-parted-config.yaml").read_text())
    cfg = yaml.safe_load(cm["data"]["config.yaml"])
    assert migparted.validate(cfg) == []
    for node in plan.nodes():
        entries = cfg["mig-configs"][f"migbench-{node}"]
        assert sorted(d for e in entries for d in e["devices"]) == list(range(len(plan.node_gpus(node))))
        want: dict[str, int] = {}
        for g in plan.node_gpus(node):
            for i in plan.instances_of(g.gpu):
                want[i.profile] = want.get(i.profile, 0) + 1
        got: dict[str, int] = {}
        for e in entries:
            for p, n in e["mig-devices"].items():
                got[p] = got.get(p, 0) + n * len(e["devices"])
        assert got == want
    labels = (out / "label-nodes.sh").read_text()
    assert all(f"kubectl label node {n} nvidia.com/mig.config=migbench-{n} --overwrite" in labels for n in plan.nodes())
    assert subprocess.run(["bash", "-n", str(out / "label-nodes.sh")]).returncode == 0


def test_indexed_jobs_per_type_wait_for_the_recut_and_stay_within_the_plans_counts(exported):
    plan, _, out, _ = exported
    for a in arrays(plan):
        job = yaml.safe_load((out / "jobs" / f"{a.name}.yaml").read_text())
        spec, pod = job["spec"], job["spec"]["template"]["spec"]
        assert spec["completionMode"] == "Indexed" and spec["completions"] == len(a.tasks)
        assert spec["parallelism"] == min(len(a.tasks), a.count) and spec["backoffLimitPerIndex"] == plan.launch.retries
        assert pod["nodeSelector"] == {"nvidia.com/mig.config.state": "success"}
        terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        assert terms[0]["matchExpressions"][0]["values"] == list(a.per_node)
        c = pod["containers"][0]
        assert c["image"] == "example.org/lab/train:1" and c["resources"]["limits"] == {f"nvidia.com/mig-{a.profile}": 1}
        assert {"name": "state", "persistentVolumeClaim": {"claimName": "runs"}} in pod["volumes"]


def test_each_pod_gets_its_runs_argv_and_migbench_variables(exported, tmp_path):
    """What `migbench exec` does in pod i of each Job (JOB_COMPLETION_INDEX=i): its task's runs."""
    plan, path, out, _ = exported
    for a in arrays(plan):
        c = yaml.safe_load((out / "jobs" / f"{a.name}.yaml").read_text())["spec"]["template"]["spec"]["containers"][0]
        args = c["command"]
        assert args[:3] == ["migbench", "exec", "/etc/migbench/plan.yaml"] and args[args.index("--array") + 1] == a.name
        for t in a.tasks:
            env = {"JOB_COMPLETION_INDEX": str(t.index), "NVIDIA_VISIBLE_DEVICES": "MIG-pod", "NODE_NAME": a.nodes[0]}
            prep = prepare(plan, a.name, env=env, state_dir=sd_at(tmp_path), sha256=args[args.index("--sha256") + 1], dry_run=True, workdir=tmp_path)
            assert [s.run_id for s in prep.specs] == list(t.runs)
            for s in prep.specs:
                assert s.argv == plan.run(s.run_id).argv and s.workdir == str(tmp_path)
                assert s.env["MIGBENCH_RUN_ID"] == s.run_id and s.env["CUDA_VISIBLE_DEVICES"] == "MIG-pod"
                assert s.env["MIGBENCH_ATTEMPT"] == "1" and s.env["MIGBENCH_RUN_DIR"] == str(tmp_path / s.run_id)
            assert prep.engine["engine"] == "k8s"


def test_the_checks_catch_what_the_schemas_miss(exported):
    plan, _, out, _ = exported
    cm = yaml.safe_load((out / "mig-parted-config.yaml").read_text())
    cfg = yaml.safe_load(cm["data"]["config.yaml"])
    a = arrays(plan)[0]
    good = k8s.job(plan, a, sha256="0" * 64, image="i", namespace="default", plan_cm="p", state_pvc=None, workdir=".")
    assert k8s.check(plan, [good], cm, cfg) == []

    def broken(mutate):  # type: ignore[no-untyped-def]
        j = copy.deepcopy(good)
        mutate(j.manifest)
        return k8s.check(plan, [j], cm, cfg)

    spec = ["spec", "template", "spec"]

    def at(m, path):  # type: ignore[no-untyped-def]
        for p in path:
            m = m[p]
        return m

    assert "not a DNS-1123 label" in broken(lambda m: m["metadata"].__setitem__("name", "Mb_Job"))[0]
    assert "label value" in broken(lambda m: m["metadata"]["labels"].__setitem__("migbench.io/sweep", "x" * 64))[0]
    assert "not a quantity" in broken(lambda m: at(m, spec)["containers"][0]["resources"]["limits"].__setitem__(a and k8s.resource_name(a.profile), "one"))[0]
    assert "whole number" in broken(lambda m: at(m, spec)["containers"][0]["resources"]["limits"].__setitem__(k8s.resource_name(a.profile), "0.5"))[0]
    assert "exceeds the plan's" in broken(lambda m: m["spec"].__setitem__("parallelism", a.count + 1))[0]
    assert "do not wait for nvidia.com/mig.config.state=success" in broken(lambda m: at(m, spec).__setitem__("nodeSelector", {}))[0]
    missing = broken(lambda m: at(m, spec)["containers"][0]["resources"].__setitem__("limits", {"nvidia.com/mig-7g.80gb": 1}))
    assert any("whose mig-parted config has no such profile" in p for p in missing)
    cfg2 = copy.deepcopy(cfg)
    cfg2["mig-configs"][f"migbench-{plan.nodes()[0]}"][0]["devices"] = []
    assert any("not every GPU of the node" in p for p in k8s.check(plan, [good], cm, cfg2))


@pytest.mark.parametrize(
    ("doc", "error"),
    [
        ({"mig-configs": {"a": []}}, "unable to parse with missing 'version' field"),
        ({"version": "v2"}, "unknown version: v2"),
        ({"version": "v1", "mig-configs": {}}, "at least one entry in 'mig-configs' is required"),
        ({"version": "v1", "mig-configs": {"a": []}}, "at least one entry in 'a' is required"),
        ({"version": "v1", "extra": 1}, "unexpected field: extra"),
        ({"version": "v1", "mig-configs": {"a": [{"devices": "all"}]}}, "missing required field: mig-enabled"),
        ({"version": "v1", "mig-configs": {"a": [{"devices": "some", "mig-enabled": False}]}}, "invalid 'devices'"),
        ({"version": "v1", "mig-configs": {"a": [{"devices": "all", "mig-enabled": True}]}}, "missing required field 'mig-devices'"),
        (
            {"version": "v1", "mig-configs": {"a": [{"devices": [0], "mig-enabled": False, "mig-devices": {"1g.5gb": 1}}]}},
            "MIG devices included when 'mig-enabled' is false",
        ),
        (
            {"version": "v1", "mig-configs": {"a": [{"devices": [0], "mig-enabled": True, "mig-devices": {"1g.5gb": 0}}]}},
            "all counts for all MigProfiles are 0",
        ),
        ({"version": "v1", "mig-configs": {"a": [{"devices": [0], "mig-enabled": True, "mig-devices": {"1g.5": 1}}]}}, "missing 'gb' from '%dgb'"),
        ({"version": "v1", "mig-configs": {"a": [{"devices": [0], "mig-enabled": True, "mig-devices": {"1g.5gb+me-x": 1}}]}}, "contains both '+/-' attributes"),
        ({"version": "v1", "mig-configs": {"a": [{"devices": [0], "mig-enabled": True, "mig-devices": {"1g.5gb+me,me": 1}}]}}, "non unique attribute"),
    ],
)
def test_mig_parted_rules(doc, error):
    errs = migparted.validate(doc)
    assert any(error in e for e in errs), errs


def test_mig_parted_accepts_the_shapes_of_its_own_examples():
    doc = {
        "version": "v1",
        "mig-configs": {
            "all-disabled": [{"devices": "all", "mig-enabled": False}],
            "all-1g.5gb": [{"device-filter": ["0x20B010DE", "0x20B110DE"], "devices": "all", "mig-enabled": True, "mig-devices": {"1g.5gb": 7}}],
            "custom": [
                {"devices": [0, 1], "mig-enabled": True, "mig-devices": {"1c.3g.20gb": 2, "1g.5gb+me": 1}},
                {"devices": [2], "mig-enabled": True, "mig-devices": {}},
            ],
        },
    }
    assert migparted.validate(doc) == []


def test_counts_that_fit_several_layouts_are_named_with_their_cost(tmp_path):
    """mig-parted takes counts: 1g.10gb@0 1g.10gb@1 3g.40gb@4 leaves room for a 2g.20gb at 2; the
    same counts placed as 1g.10gb@0 1g.10gb@2 3g.40gb@4 do not."""
    from tests.export.conftest import make_plan

    plan, _ = make_plan(
        tmp_path, "version: 1\nname: m\nfleet: [{node: n0, gpu: A100-SXM4-80GB, count: 1}]\ncommand: run {x}\nparameters: {x: [1]}\nmemory: 1GiB\n"
    )
    mem = {p: plan.instances[0].memory_mib for p in ("1g.10gb",)}
    plan.instances = [
        PlanInstance(0, "1g.10gb", 0, mem["1g.10gb"], 0.14),
        PlanInstance(0, "1g.10gb", 1, mem["1g.10gb"], 0.14),
        PlanInstance(0, "3g.40gb", 4, 40192, 0.43),
    ]
    ws = migparted.placement_warnings(plan)
    assert len(ws) == 1 and ws[0].startswith("GPU 0 (n0 GPU 0): mig-parted gets counts (2 x 1g.10gb, 1 x 3g.40gb)")
    assert "then 1g.20gb or 2g.20gb no longer fit in the free slices" in ws[0] and ws[0].endswith("migbench apply PLAN --node n0")
    r = migbench("export", "mig-parted", str(tmp_path / "p.yaml"))
    assert r.returncode == 0 and migparted.validate(r.stdout) == []
    assert yaml.safe_load(r.stdout)["mig-configs"]["migbench-n0"][0]["devices"] == [0]


def test_long_names_become_valid_kubernetes_names():
    assert k8s.dns_label("Sweep_Name.With.Dots") == "sweep-name-with-dots"
    long = k8s.dns_label("x" * 100)
    assert len(long) == 63 and k8s.DNS_LABEL.fullmatch(long)
    name = migparted.config_name(Plan("s", None, "", [], [], [], [], None, None, None, {}), "n" * 63)  # type: ignore[arg-type]
    assert len(name) <= 63 and migparted.LABEL_VALUE_RE.fullmatch(name)
    assert json.loads(json.dumps(k8s.resource_name("1g.10gb+me"))) == "nvidia.com/mig-1g.10gb.me"


def test_run_state_defaults_to_a_claim_the_export_writes_and_emptydir_must_be_asked_for(two_nodes, tmp_path):
    """Issue 22 item 6: run state defaulted to emptyDir, so logs and outcomes vanished with the pods unless --state-pvc was given."""
    plan, path = two_nodes
    out = tmp_path / "k8s"
    r = migbench("export", "k8s", str(path), "-o", str(out))
    assert r.returncode == 0, r.stderr
    pvc = yaml.safe_load((out / "state-pvc.yaml").read_text())
    name = pvc["metadata"]["name"]
    assert pvc["kind"] == "PersistentVolumeClaim" and pvc["spec"]["accessModes"] == ["ReadWriteMany"] and "storageClassName" not in pvc["spec"]
    for a in arrays(plan):
        if a.tasks:
            pod = yaml.safe_load((out / "jobs" / f"{a.name}.yaml").read_text())["spec"]["template"]["spec"]
            assert {"name": "state", "persistentVolumeClaim": {"claimName": name}} in pod["volumes"]
    assert "kubectl apply --server-side -f state-pvc.yaml -f plan-configmap.yaml -f jobs/" in r.stdout
    v = subprocess.run([*kubernetes_validate(), "--strict", "-k", K8S_VERSION, str(out / "state-pvc.yaml")], capture_output=True, text=True, timeout=120)
    assert v.returncode == 0, v.stdout + v.stderr
    r = migbench("export", "k8s", str(path), "-o", str(out), "--state", "emptydir")
    assert r.returncode == 0 and "lost with the pod" in r.stdout, r.stdout + r.stderr
    assert not (out / "state-pvc.yaml").exists()
    pod = yaml.safe_load(next((out / "jobs").glob("*.yaml")).read_text())["spec"]["template"]["spec"]
    assert {"name": "state", "emptyDir": {}} in pod["volumes"]
    r = migbench("export", "k8s", str(path), "-o", str(out), "--state", "tmpfs")
    assert r.returncode == 2 and "expected pvc or emptydir" in r.stderr


def test_a_plan_configmap_past_256_kib_is_applied_server_side_with_a_warning(two_nodes, tmp_path):
    """Issue 22 item 5: a plan ConfigMap between 256 KiB and 1 MiB was written without warning, and the printed client-side
    `kubectl apply` fails on it (its last-applied annotation holds at most 262,144 bytes)."""
    plan, path = two_nodes
    text = path.read_text()
    small = k8s.write(plan, tmp_path / "a", plan_text=text, sha256="0" * 64)
    assert not [w for w in small.warnings if "ConfigMap" in w] and small.apply_command.startswith("kubectl apply --server-side ")
    big_text = text + "# padding\n" * 30_000  # 300,000 bytes more: past the annotation limit, within a ConfigMap's 1 MiB
    big = k8s.write(plan, tmp_path / "b", plan_text=big_text, sha256="0" * 64)
    size = len((tmp_path / "b" / "plan-configmap.yaml").read_bytes())
    assert 262_144 < size < 1_048_576
    assert any(f"the plan ConfigMap is {size:,} bytes" in w and "262,144" in w and "--server-side" in w for w in big.warnings), big.warnings


@pytest.mark.parametrize(
    "option, value",
    [("--image", "img:1\n  hostPID: true"), ("--image", ""), ("--namespace", "A\nB"), ("--state-pvc", "a\nb"), ("--operator-namespace", "Gpu Operator")],
)
def test_names_given_on_the_command_line_are_checked_before_anything_is_written(two_nodes, tmp_path, option, value):
    """Regression: --image, --namespace and --state-pvc were written into every manifest as given (a
    line break made a YAML block scalar the API refuses), and the export said it succeeded."""
    _, path = two_nodes
    r = migbench("export", "k8s", str(path), "-o", str(tmp_path / "out"), f"{option}={value}")
    assert r.returncode == 2 and option in r.stderr and "internal error" not in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()
