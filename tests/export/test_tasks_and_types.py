"""The engine-neutral arrays of a plan, and Slurm's GRES type names for MIG devices."""

from __future__ import annotations

import pytest

from migbench.errors import InputError, MigbenchError, UsageError
from migbench.export import slurmctl
from migbench.export.slurm_types import (
    ClusterNode,
    detected_type,
    matches,
    nvml_prefix,
    parse_gres,
    parse_scontrol_nodes,
    parse_type_map,
    round_gb,
    site_type,
)
from migbench.export.tasks import arrays, node_devices


def test_arrays_cut_each_instance_queue_into_runs_that_share_it(two_nodes):
    plan, _ = two_nodes
    arrs = {a.profile: a for a in arrays(plan)}
    tiny = arrs["1g.10gb"]
    assert tiny.name == "a100-sxm4-80gb-1g-10gb" and tiny.count == sum(tiny.per_node.values())
    # two 4 GiB runs fit a 9.5 GiB 1g.10gb instance and max_runs_per_instance is 2: at most pairs (the
    # runs-at-once plan gives the runs every 1g.10gb the layout has, so some run alone)
    sizes = sorted(len(t.runs) for t in tiny.tasks)
    assert sizes[-1] == 2 and set(sizes) <= {1, 2} and sum(sizes) == 12
    assert sorted(r for t in tiny.tasks for r in t.runs) == sorted(r.id for r in plan.runs if r.group == "tiny")
    for t in tiny.tasks:  # a task's runs are on one planned instance
        assert len({plan.run(r).instance_key for r in t.runs}) == 1 == len({t.instance})
    big = arrs["3g.40gb"]
    assert [len(t.runs) for t in big.tasks] == [1, 1, 1] and [t.index for t in big.tasks] == [0, 1, 2]
    with pytest.raises(InputError, match=r"index 3 maps to no run: array a100-sxm4-80gb-3g-40gb has 3 task\(s\) \(0-2\)"):
        big.task(3)
    waves = [min(plan.run(r).wave or 0 for r in t.runs) for t in tiny.tasks]
    assert waves == sorted(waves)  # tasks in the plan's start order


def test_node_devices_are_in_gres_order(two_nodes):
    plan, _ = two_nodes
    for node in plan.nodes():
        devs = node_devices(plan, node)
        order = [a.profile for a in arrays(plan)]
        assert [d.profile for d in devs] == sorted((d.profile for d in devs), key=order.index)
        assert {d.gpu for d in devs} == {g.gpu for g in plan.node_gpus(node)}


@pytest.mark.parametrize(
    ("model", "profile", "mib", "want"),
    [
        ("A100-SXM4-40GB", "1g.5gb", 4864, "nvidia_a100_1g.5gb"),  # as seen in NVIDIA/deepops#1214
        ("A100-SXM4-80GB", "3g.40gb", 40192, "nvidia_a100_3g.39gb"),  # NVIDIA/mig-parted#31
        ("A100-PCIE-80GB", "3g.40gb", 40192, "nvidia_a100_80gb_pcie_3g.39gb"),
        ("A100-SXM4-80GB", "1g.10gb", 9728, "nvidia_a100_1g.10gb"),  # 9.5 rounds away from zero
        ("A100-SXM4-80GB", "1g.10gb+me", 9728, "nvidia_a100_1g.10gb"),  # +me is not in the name
    ],
)
def test_types_are_named_as_nvml_autodetection_names_them(model, profile, mib, want):
    assert detected_type(model, profile, mib) == want
    assert matches(want, model, profile, mib)


def test_naming_rule_parts():
    assert nvml_prefix("NVIDIA H100 NVL") == "nvidia_h100_nvl" and nvml_prefix("NVIDIA A100-SXM4-80GB") == "nvidia_a100"
    assert [round_gb(m) for m in (9727, 9728, 40192, 40448, 4864)] == [9, 10, 39, 40, 5]
    # a site may declare a substring of the detected name, or the nominal size; not another profile
    assert matches("a100_3g.39gb", "A100-SXM4-80GB", "3g.40gb", 40192)
    assert matches("3g.40gb", "A100-SXM4-80GB", "3g.40gb", 40192)
    assert not matches("a100", "A100-SXM4-80GB", "3g.40gb", 40192)
    assert not matches("1g.10gb", "A100-SXM4-80GB", "3g.40gb", 40192)


def test_type_map_from_options_and_file(tmp_path):
    f = tmp_path / "map.yaml"
    f.write_text("3g.40gb: a100_3g.40gb\n1g.10gb: small\n")
    m = parse_type_map(["1g.10gb=tiny", "A100-SXM4-80GB:2g.20gb=mid,4g.40gb=x"], f)
    assert m == {"3g.40gb": "a100_3g.40gb", "1g.10gb": "tiny", "A100-SXM4-80GB:2g.20gb": "mid", "4g.40gb": "x"}
    assert site_type("A100-SXM4-80GB", "2g.20gb", 19968, m) == "mid"
    assert site_type("A100-SXM4-80GB", "7g.80gb", 80896, m) == "nvidia_a100_7g.79gb"
    with pytest.raises(UsageError):
        parse_type_map(["3g.40gb"])
    with pytest.raises(UsageError):
        parse_type_map(["3g.40gb=bad:type"])
    (tmp_path / "list.yaml").write_text("- a\n")
    with pytest.raises(InputError):
        parse_type_map([], tmp_path / "list.yaml")


def test_scontrol_output_is_read_per_node():
    text = (
        "NodeName=n0 Arch=x86_64 CoresPerSocket=1 Gres=gpu:nvidia_a100_1g.10gb:4(S:0-31),gpu:a100_3g.39gb:1(S:0,2),"
        "shard:8 GresUsed=gpu:nvidia_a100_1g.10gb:2(IDX:0-1) State=MIXED ThreadsPerCore=1\n"
        "NodeName=n1 Gres=gpu:2 State=IDLE+DRAIN Reason=x\nNodeName=cpu0 Gres=(null) State=IDLE\n"
    )
    nodes = parse_scontrol_nodes(text)
    assert nodes["n0"] == ClusterNode("n0", "MIXED", {"nvidia_a100_1g.10gb": 4, "a100_3g.39gb": 1})
    assert nodes["n1"].gres == {"": 2} and nodes["n1"].state == "IDLE+DRAIN" and nodes["cpu0"].gres == {}
    assert parse_gres("gpu:a:1,gpu:a:2") == {"a": 3}


def cluster(**gres: dict[str, int]) -> dict[str, ClusterNode]:
    return {n: ClusterNode(n, "IDLE", g) for n, g in gres.items()}


def needs(plan):  # type: ignore[no-untyped-def]
    return {n: {a.profile: a.per_node.get(n, 0) for a in arrays(plan)} for n in plan.nodes()}


def test_check_maps_the_plan_onto_the_clusters_own_types(two_nodes):
    plan, _ = two_nodes
    want = needs(plan)
    # the site declares the plain profile names (a substring of what slurmd detects)
    c = cluster(**{n: {p: k for p, k in w.items() if k} for n, w in want.items()})
    chosen, notes = slurmctl.check(plan, c, {})
    assert {a.profile: chosen[a.name] for a in arrays(plan)} == {"1g.10gb": "1g.10gb", "3g.40gb": "3g.40gb"}
    # NVML-detected names are taken as they are
    c = cluster(**{n: {detected_type("A100-SXM4-80GB", p, 9728 if p == "1g.10gb" else 40192): k for p, k in w.items() if k} for n, w in want.items()})
    chosen, _ = slurmctl.check(plan, c, {})
    assert sorted(set(chosen.values())) == ["nvidia_a100_1g.10gb", "nvidia_a100_3g.39gb"]


def test_check_names_every_missing_node_type_and_count(two_nodes):
    plan, _ = two_nodes
    want = needs(plan)
    n0 = dict(want["n0"])
    c = cluster(n0={"1g.10gb": max(1, n0["1g.10gb"] - 1)})
    with pytest.raises(MigbenchError) as e:
        slurmctl.check(plan, c, {})
    msg = e.value.message
    assert "node n1 is not in the cluster (scontrol show node lists: n0)" in msg
    if n0["3g.40gb"]:
        assert "node n0 lacks a GRES type for 3g.40gb" in msg and "expected nvidia_a100_3g.39gb" in msg
    assert f"node n0 has {max(1, n0['1g.10gb'] - 1)} x gpu:1g.10gb, the plan needs {n0['1g.10gb']}" in msg
    c = cluster(n0={"a100_1g.10gb": 9, "nvidia_a100_1g.10gb": 9, "3g.40gb": 2}, n1={"1g.10gb": 9, "3g.40gb": 2})
    with pytest.raises(MigbenchError) as e:
        slurmctl.check(plan, c, {})
    assert "has a different GRES type on each node (n0: nvidia_a100_1g.10gb, n1: 1g.10gb)" in e.value.message
    c = cluster(n0={"a100_1g.10gb": 9, "1g.10gb": 9, "3g.40gb": 2}, n1={"1g.10gb": 9, "3g.40gb": 2})
    with pytest.raises(MigbenchError, match=r"could be any of a100_1g.10gb, 1g.10gb; say which with --type-map 1g.10gb=TYPE"):
        slurmctl.check(plan, c, {})
    chosen, _ = slurmctl.check(plan, c, {"1g.10gb": "1g.10gb"})
    assert "1g.10gb" in chosen.values()
