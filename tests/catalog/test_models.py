"""The catalogue's Blackwell and GH200 entries (issue 14, item 2) and memory by driver and by placement (item 3),
against the public captures they come from (docs/mig-facts.md, docs/captures.md)."""

from __future__ import annotations

import pytest

from migbench.catalog import Catalog, Placement
from migbench.catalog.store import pick_memory
from migbench.duration import Demand
from migbench.planner import FleetGpu, SolveOptions, solve
from migbench.planner.assemble import make_plan
from migbench.sweep import load_sweep

CAT = Catalog.load(include_user=False)
NEW = ["B200", "GB200", "GH200-144GB", "RTX-PRO-6000-BLACKWELL"]


def test_new_models_have_the_published_profiles_and_enumerate_legal_layouts():
    b200 = CAT.model("B200")
    assert [(p.name, p.id, p.engines.sm) for p in b200.profiles][:4] == [
        ("1g.23gb", 19, 18),
        ("1g.23gb+me", 20, 18),
        ("1g.45gb", 15, 30),
        ("2g.45gb", 14, 36),
    ]  # b200_lgip_*.txt
    gb200 = CAT.model("NVIDIA GB200")
    assert [(p.name, p.id, p.engines.sm) for p in gb200.profiles if p.compute_slices < 3] == [
        ("1g.23gb", 19, 18),
        ("1g.23gb+me", 20, 18),
        ("1g.47gb", 15, 32),
        ("2g.47gb", 14, 38),
    ]  # gb200_lgip_*.txt
    rtx = CAT.model("NVIDIA RTX PRO 6000 Blackwell Server Edition")
    assert [p.id for p in rtx.profiles] == [14, 21, 47, 65, 67, 5, 35, 64, 66, 0, 32]  # rtx-pro-6000_lgip_1..4
    assert (rtx.memory_slices, rtx.compute_slices, rtx.profile("4g.96gb").engines.sm) == (4, 4, 188)
    for key in NEW:
        model = CAT.model(key)
        layouts = model.layouts()
        assert layouts and all(model.is_legal(lay) for lay in layouts), key
        assert all(p.memory_mib for p in model.profiles), key  # plannable and simulable offline
        assert any("starts" in p.unverified for p in model.profiles), key  # inferred placements are marked
    assert len(b200.layouts()) == len(gb200.layouts()) == len(CAT.model("GH200-144GB").layouts()) == 78
    assert [[str(p) for p in lay] for lay in rtx.layouts()] == [
        ["1g.24gb@0", "1g.24gb@1", "1g.24gb@2", "1g.24gb@3"],
        ["1g.24gb@0", "1g.24gb@1", "2g.48gb@2"],
        ["2g.48gb@0", "1g.24gb@2", "1g.24gb@3"],
        ["2g.48gb@0", "2g.48gb@2"],
        ["4g.96gb@0"],
    ]
    # GH200 96GB: names and PCI id only; nothing to plan with offline, and it says so
    gh = CAT.model("NVIDIA GH200 480GB")
    assert gh.key == "GH200-96GB" and not any(p.memory_mib for p in gh.profiles) and gh.unverified


def test_rtx_pro_variants_are_alternatives_and_all_me_admits_only_no_me():
    """nvml.h: an *_ALL_ME profile "prevents allocation of all but _NO_ME profiles" (docs/mig-facts.md#rtx-pro-6000)."""
    rtx = CAT.model("RTX-PRO-6000-BLACKWELL")
    assert [p.name for p in rtx.plain_profiles()] == ["1g.24gb", "2g.48gb", "4g.96gb"]
    assert rtx.is_legal([Placement("1g.24gb+me.all", 0), Placement("1g.24gb-me", 1), Placement("2g.48gb-me", 2)])
    assert "allows only -me profiles" in "; ".join(rtx.check([Placement("1g.24gb+me.all", 0), Placement("1g.24gb", 1)]))
    assert not rtx.is_legal([Placement("1g.24gb+me.all", 0), Placement("2g.48gb+me.all", 2)])
    assert rtx.is_legal([Placement("1g.24gb+gfx", 0), Placement("1g.24gb", 1), Placement("2g.48gb+gfx", 2)])


@pytest.mark.parametrize("key", NEW)
def test_new_models_plan_a_sweep_and_warn(key):
    model = CAT.model(key)
    small = min(p.memory_mib or 0 for p in model.plain_profiles())
    runs = [Demand(f"r{i}", small // 2) for i in range(6)] + [Demand("big", model.max_memory_mib() // 2 + 1024)]
    sol = solve(runs, [FleetGpu(0, model), FleetGpu(1, model)], SolveOptions(time_limit_s=5))
    assert not sol.unplaced and len(sol.assigned) == 7
    for lay in sol.layouts.values():
        assert model.is_legal(lay)


def test_plan_warning_names_the_values_of_an_unknown_change_point(tmp_path):
    """Issue 14 item 3: where the change point is unknown the plan uses the smaller value and its warning names
    both (B200 1g.23gb: 22.00 GiB in January, 20.50 GiB in March 2025, drivers not stated)."""
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text("version: 1\nname: s\ngroups:\n  - name: g\n    command: python t.py {seed}\n    parameters: {seed: [0, 1]}\n    memory: 18GiB\n")
    sweep = load_sweep(sweep_file)
    plan = make_plan(sweep, [FleetGpu(0, CAT.model("B200"))], SolveOptions(time_limit_s=5))
    warning = next(w for w in plan.warnings if w.startswith("B200 1g.23gb:"))
    assert "20992 MiB" in warning and "22528 MiB" in warning and "the smaller, 20992 MiB, is planned with" in warning
    assert all(i.memory_mib == 20992 for i in plan.instances if i.profile == "1g.23gb")


# -- memory by driver --------------------------------------------------------------------------------------


def mib(key: str, profile: str, driver: str | None) -> tuple[int | None, bool]:
    p = CAT.model(key, driver).profile(profile)
    return p.memory_mib, "memory" not in p.unverified


def test_memory_by_driver_from_the_captures():
    # H100 SXM5: 525.125.06 from the Google Cloud -lgip and MIG devices (public/h100-sxm5_*), certain
    assert mib("H100-SXM5-80GB", "1g.10gb", "525.125.06") == (9856, True)
    assert mib("H100-SXM5-80GB", "3g.40gb", "525.125.06") == (40192, True)
    # 535.104.12 [U] shows 40320 and the User Guide 40448 on 580.65.06: between them the smaller, with a warning
    assert mib("H100-SXM5-80GB", "3g.40gb", "550.54.15") == (40192, False)
    assert mib("H100-SXM5-80GB", "3g.40gb", "535.104.12") == (40320, False)  # what that driver printed [U]
    assert mib("H100-SXM5-80GB", "3g.40gb", "580.65.06") == (40448, True)
    # the stackhpc -lgip (9.75 GiB) states no driver: it never raises the planned value on its own
    assert mib("H100-SXM5-80GB", "1g.20gb", "580.65.06") == (19968, False)
    # H100 PCIe: 570.169 is a paste of unresolved provenance: used on exactly that driver, the smaller elsewhere
    assert mib("H100-PCIE-80GB", "1g.10gb", "570.169") == (9984, False)
    assert mib("H100-PCIE-80GB", "1g.10gb", "570.133.20") == (9856, False)
    # A100-40GB: 510.47.03 and R525 values (yokatayama, User Guide)
    assert mib("A100-SXM4-40GB", "2g.10gb", "510.47.03") == (9984, True)
    assert mib("A100-SXM4-40GB", "2g.10gb", "525.85.12") == (9856, True)
    # Blackwell and RTX PRO 6000: two values, no driver stated -> the smaller
    assert mib("B200", "1g.23gb", None) == (20992, False)
    assert mib("GB200", "1g.23gb", None) == (20480, False)
    assert mib("RTX-PRO-6000-BLACKWELL", "1g.24gb", None) == (23680, False)
    # larger Blackwell/GH200 profiles: a derived lower bound, marked
    assert mib("B200", "3g.90gb", None) == (2 * 45312, False)


def test_pick_memory_rules():
    obs = [{"driver": "525.125.06", "mib": 100}, {"driver": "580.65.06", "mib": 120}]
    assert pick_memory(obs, (525, 125, 6))[:1] == (100,)
    mib_, how, certain = pick_memory(obs, (550, 54, 15))
    assert (mib_, certain) == (100, False) and "100 MiB" in how and "120 MiB" in how
    down = [{"driver": "525", "mib": 120}, {"driver": "570", "mib": 100}]
    assert pick_memory(down, (550, 1))[:1] == (100,)  # a decrease between: the smaller, before it is known
    assert pick_memory(down, (525, 60, 13)) == (120, "catalogue, observed on driver 525 (same branch)", True)
    unstated = [{"driver": "525.125.06", "mib": 100}, {"driver": "580", "mib": 120, "driver_stated": False}]
    assert pick_memory(unstated, (590, 1))[:1] == (100,)
    assert pick_memory([], (550,)) == (None, "no source gives this profile's memory", False)


def test_memory_by_placement_is_reported_by_the_simulator(tmp_path):
    """The User Guide's two 3g.20gb on one A100-40GB report 20224 and 20096 MiB (samples/a100-40gb_cgi-C-lgi_1.txt):
    the simulator reports it before R525; plans keep the profile's value."""
    from migbench.backend.sim import fake_nvml
    from migbench.backend.sim.host import init_host

    model = CAT.model("A100-SXM4-40GB", "460.73.01")
    assert model.profile("3g.20gb").memory_mib == 20096 and model.profile("3g.20gb").placement_memory == ((0, 20224),)
    host = init_host(tmp_path / "a", "A100-SXM4-40GB", 1, driver="460.73.01", mig=True)
    for _ in range(2):
        gi = host.create_gpu_instance(0, 9)
        host.create_compute_instance(0, gi.id)
    assert [(d.gi_id, d.memory_mib) for d in host.read().mig_devices(0)] == [(1, 20224), (2, 20096)]
    with fake_nvml.installed(str(tmp_path / "a")):
        import pynvml

        pynvml.nvmlInit()
        parent = pynvml.nvmlDeviceGetHandleByIndex(0)
        totals = [pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetMigDeviceHandleByIndex(parent, i)).total // 2**20 for i in range(2)]
        pynvml.nvmlShutdown()
    assert totals == [20224, 20096]
    later = init_host(tmp_path / "b", "A100-SXM4-40GB", 1, driver="525.125.06", mig=True)
    for _ in range(2):
        later.create_compute_instance(0, later.create_gpu_instance(0, 9).id)
    assert [d.memory_mib for d in later.read().mig_devices(0)] == [19968, 19968]
