"""Every public capture with GPU-instance ids, and the newer drivers' text, replayed on the simulated driver
(issue 14, items 4 and 5): the capture's commands run in its order on a host of its GPU and driver, and the
ids, placements and text must match. The one input a capture cannot tell is whether its board numbers GPU
instances with the halves of the memory slices exchanged (`swapped`, docs/mig-facts.md#gi-ids); each test
names the setting the capture implies. Sensor readings (temperature, power), bus ids, UUIDs and timestamps
are masked. Captures: tests/data/samples/ (docs/captures.md)."""

from __future__ import annotations

import re
from pathlib import Path

from migbench.backend.sim.host import SimHost, init_host
from migbench.backend.smi import parse_create_lines
from tests.support import DATA
from tests.support.captures import blocks as capture_blocks

SAMPLES = DATA / "samples"
PUBLIC = SAMPLES / "public"
MIG_UUID = re.compile(r"MIG-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
BUS = re.compile(r"[0-9A-F]{8}:[0-9A-F]{2}:[0-9A-F]{2}\.\d")


def blocks(path: Path) -> list[tuple[list[str], list[str]]]:
    return capture_blocks(path)


def mask(lines: list[str]) -> list[str]:
    """Blank what a simulator cannot know: sensor fields, bus ids, UUIDs, persistence mode, trailing blanks."""
    out = []
    for ln in lines:
        ln = MIG_UUID.sub("MIG-x", BUS.sub("BUS", ln.rstrip()))
        if ln.startswith("| N/A"):
            end = ln.index("|", 1)
            ln = "|" + "#" * (end - 1) + ln[end:]
        ln = re.sub(r"^(\|\s+\d+\s+NVIDIA .*?)\b(On |Off)(\s*\|)", lambda m: m.group(1) + "PM " + m.group(3), ln)
        out.append(ln)
    return out


def unused(lines: list[str], total: int) -> list[str]:
    """Blank the used memory of GPU rows with `total` MiB (the driver counts a little more than its instances'
    idle use and processes, by amounts no capture explains)."""
    pat = re.compile(rf"\|\s*\d+MiB /\s+{total}MiB")
    return [pat.sub(f"|U/{total}MiB", ln) for ln in lines]


def table(lines: list[str], title: str) -> list[str]:
    """The block of a plain nvidia-smi output from the bar above `title` to the next blank line."""
    i = next(k for k, ln in enumerate(lines) if ln.startswith(title))
    j = next((k for k in range(i, len(lines)) if not lines[k].strip()), len(lines))
    return lines[i - 1 : j]


# -- GPU-instance ids and default placements, capture by capture ---------------------------------------------


def test_user_guide_instance_geometry(tmp_path, smi):
    """Capture 1 and 2 (docs/fidelity-findings.md#gi-ids): `-cgi 19,19,14,9` gives 13, 11, 3 then Insufficient
    Resources; `-cgi 9,19,14,19` gives 2, 7, 4, 8 and the -lgi placements. Not swapped."""
    init_host(tmp_path, "A100-SXM4-40GB", 1, driver="460.73.01", mig=True)
    (c1, o1), (c2, o2), (c3, o3) = blocks(SAMPLES / "a100-40gb_cgi-insufficient-resources_1.txt")
    assert smi(tmp_path, *c1) == (255, o1)
    smi(tmp_path, "mig", "-dgi")
    assert smi(tmp_path, *c2) == (0, o2)
    assert smi(tmp_path, *c3) == (0, o3)


def test_user_guide_create_two_3g_contradicts_itself(tmp_path, smi):
    """Capture 3: the `-cgi 9,3g.20gb -C` lines (2, then 1) fit an unswapped board, its -lgi (id 1 at 4:4) a
    swapped one; no setting reproduces both (the only public capture the rule does not fit). The lines and
    the MIG-devices table match unswapped; swapped reproduces the -lgi."""
    (c1, o1), (c2, o2), _ = blocks(SAMPLES / "a100-40gb_cgi-C-lgi_1.txt")
    init_host(tmp_path / "a", "A100-SXM4-40GB", 1, driver="460.73.01", mig=True)
    assert smi(tmp_path / "a", *c1) == (0, o1)
    init_host(tmp_path / "b", "A100-SXM4-40GB", 1, driver="460.73.01", mig=True, swapped=[0])
    assert parse_create_lines("\n".join(smi(tmp_path / "b", *c1)[1])).gpu_instances == (1, 2)
    assert smi(tmp_path / "b", *c2) == (0, o2)


def test_yokatayama_a100_pcie_510(tmp_path, smi):
    """Capture 4: A100-PCIE-40GB on 510.47.03, `-cgi 9,19,14,19` -> 1, 11, 6, 12 and the same placements as the
    User Guide's: a swapped board. The -lcip block of that README shows GIs of another session (skipped)."""
    init_host(tmp_path, "A100-PCIE-40GB", 1, driver="510.47.03", mig=True, swapped=[0], gpu_uuids=["GPU-14ac2834-0d81-0508-69eb-e25264c08d21"])
    for cmd, out in blocks(PUBLIC / "a100-pcie-40gb_cgi-lgi_1.txt"):
        if "-lcip" in cmd:
            continue
        rc, got = smi(tmp_path, *cmd)
        assert mask(got)[: len(out)] == mask(out) and len(got) - len(out) <= 1, cmd  # the last block is cut


def test_a30_four_1g(tmp_path, smi):
    """Capture 5: four 1g.6gb on an A30 get ids 3, 4, 5, 6 at 0..3 (not swapped)."""
    init_host(tmp_path, "A30", 1, driver="470.42.01", mig=True)
    smi(tmp_path, "mig", "-cgi", "14,14,14,14")
    cmd, out = blocks(SAMPLES / "a30_lgip-lgipp-lgi_1.txt")[2]
    assert smi(tmp_path, *cmd) == (0, out)


def test_scaleway_h100_pcie_525(tmp_path, smi):
    """Capture 6: `-cgi 9,19,19,19 -C` -> 2, 7, 8, 9, the -lgi, and -L devices in GI-id order (not swapped)."""
    init_host(tmp_path, "H100-PCIE-80GB", 1, driver="525.125.06", mig=True, gpu_uuids=["GPU-7cd6d4d6-9fa8-13be-3c42-09a1b2280a02"])
    for cmd, out in blocks(PUBLIC / "h100-pcie_cgi-C-lgi-L_1.txt"):
        rc, got = smi(tmp_path, *cmd)
        assert (rc, mask(got)) == (0, mask(out)), cmd


def test_h100_nvl_560_main_table(tmp_path, smi):
    """Capture 7: H100 NVL on 560.35.03, `-cgi 9,15,19 -C` -> GIs 1, 5, 13 (a swapped board); the 91-column
    table line for line: GPU row, 64MiB of 95830MiB, MIG devices with 38/13/13 MiB idle use and BAR1 rows."""
    init_host(tmp_path, "H100-NVL", 1, driver="560.35.03", mig=True, swapped=[0])
    bl = blocks(SAMPLES / "h100-nvl_lgip-lgipp_1.txt")
    (cgi, _), (_, expected) = bl[2], bl[-1]
    assert parse_create_lines("\n".join(smi(tmp_path, *cgi)[1])).gpu_instances == (1, 5, 13)
    rc, got = smi(tmp_path)
    assert (rc, mask(got[1:])) == (0, mask(expected))


def test_dcgm_138_two_boards_one_host(tmp_path, smi):
    """Capture 8: two A100 80GB of one host with the same layout and different ids (9, 10, 3, 2 and 13, 14, 5,
    1): GPU 0 unswapped, GPU 1 swapped. Creation order 3g, 2g, 1g, 1g (the GPU operator's) gives the
    placements of the capture."""
    init_host(tmp_path, "A100-SXM4-80GB", 2, mig=True, swapped=[1])
    assert smi(tmp_path, "mig", "-cgi", "9,14,19,19")[0] == 0
    ((cmd, out),) = blocks(PUBLIC / "a100-80gb_lgi_1.txt")
    assert smi(tmp_path, *cmd) == (0, out)


def test_nvitop_8_three_2g_on_a_swapped_board(tmp_path, smi, sleeper):
    """Capture 9: three 2g.20gb on GPU 1 get GIs 3, 5, 6 (swapped), 19968MiB each, BAR1 32767MiB, 510.47.03;
    GPU 2's first device is GI 3 too (swapped)."""
    init_host(tmp_path, "A100-SXM4-80GB", 3, driver="510.47.03", swapped=[1, 2])
    smi(tmp_path, "-i", "1,2", "-mig", "1")
    assert parse_create_lines("\n".join(smi(tmp_path, "mig", "-i", "1", "-cgi", "14,14,14", "-C")[1])).gpu_instances == (3, 5, 6)
    smi(tmp_path, "mig", "-i", "2", "-cgi", "14", "-C")
    expected = (PUBLIC / "a100-80gb_nvidia-smi-mig-devices_1.txt").read_text().splitlines()[1:]
    got = table(smi(tmp_path)[1], "| MIG devices:")
    used = re.compile(r"\|\s+\d+MiB / ")  # the capture's devices run processes; compare all but used memory
    assert [used.sub("| U / ", ln) for ln in got[: len(expected)]] == [used.sub("| U / ", ln) for ln in expected]


def test_stackhpc_h100_sxm5_cap_minors(tmp_path, smi):
    """Capture 10: `slurmd -G` lists the MIG capability minors of 4g.40gb + 3x 1g.10gb on two H100 SXM5 (four
    1g requested, three fit). With minor = 3 + 135 * gpu + 9 * GI (docs/mig-facts.md#cuda) the GIs are
    2; 7, 8, 9 on the swapped GPU 2 and 1; 11, 12, 13 on GPU 3."""
    text = (PUBLIC / "h100-sxm5_slurmd-G-caps_1.txt").read_text()
    minors = sorted(int(m) for m in re.findall(r"nvidia-cap(\d+)", text))
    init_host(tmp_path, "H100-SXM5-80GB", 4, mig=True, swapped=[2])
    for gpu in ("2", "3"):
        rc, got = smi(tmp_path, "mig", "-i", gpu, "-cgi", "5,19,19,19,19")
        assert rc == 255 and len(parse_create_lines("\n".join(got)).gpu_instances) == 4
    st = SimHost(tmp_path).read()
    assert sorted(3 + 135 * g + 9 * gi.id for g in (2, 3) for gi in st.gpus[g].gpu_instances) == minors


def test_h100_pcie_seven_1g_on_a_swapped_board(tmp_path, smi):
    """Capture 11 [U]: seven 1g.10gb created one by one get 9, 7, 8, 11, 12, 13, 14 (swapped); the 59-column
    -lgi of a recent driver; -L in GI-id order."""
    init_host(tmp_path, "H100-PCIE-80GB", 1, driver="570.169", mig=True, swapped=[0], gpu_uuids=["GPU-e284f2f0-b7db-deb5-4d10-143420128721"])
    for cmd, out in blocks(PUBLIC / "h100-pcie_cgi-lgi-L_2.txt"):
        rc, got = smi(tmp_path, *cmd)
        assert (rc, mask(got)) == (0, mask(out)), cmd


def test_a100_lci_table_layout_3_swapped(tmp_path, smi):
    """Capture 12 [U]: 4g.20gb GI 2, 2g.10gb GI 3 (two 1c CIs), 1g.5gb GI 9 fit only a swapped board."""
    init_host(tmp_path, "A100-SXM4-40GB", 1, driver="510.47.03", mig=True, swapped=[0])
    smi(tmp_path, "mig", "-cgi", "5,14,19")
    smi(tmp_path, "mig", "-gi", "2", "-cci")
    smi(tmp_path, "mig", "-gi", "3", "-cci", "0,0")
    smi(tmp_path, "mig", "-gi", "9", "-cci")
    ((cmd, out),) = blocks(SAMPLES / "a100-40gb_lci_1.txt")
    assert smi(tmp_path, *cmd) == (0, out)


def test_google_cloud_h100_sxm5_two_3g(tmp_path, smi):
    """Google Cloud docs, 525.125.06: `-cgi 9,9 -C` on an H100 80GB HBM3 -> GIs 1 and 2 of 40192MiB with 19MiB
    idle use and 65535MiB BAR1; the parent shows 81559MiB (the catalogue's H100 SXM5 total)."""
    init_host(tmp_path, "H100-SXM5-80GB", 2, driver="525.125.06", mig=True)
    bl = blocks(PUBLIC / "h100-sxm5_nvidia-smi-cgi_1.txt")
    assert smi(tmp_path, *bl[0][0])[0] == 0
    expected = [ln for ln in bl[1][1] if ln != "......"]
    got = smi(tmp_path, "-i", "0")[1][1:]
    # the page shows two GPUs, the MIG devices of GPU 0, and elides the rest
    gpu1 = smi(tmp_path, "-i", "1")[1][1:][7:11]
    assert unused(mask(got[:11] + gpu1 + got[11:]), 81559) == unused(mask(expected), 81559)


def test_r535_all_balanced_h100_sxm5(tmp_path, smi, sleeper):
    """[U] 535.104.12: the all-balanced layout made in the GPU operator's order (3g, 2g, 1g, 1g) gets GIs 2, 3,
    9, 10 (unswapped); the 89-column table with the R535 MIG-devices and process columns, 37/25/12 MiB idle use,
    the 535.104.12 MIG device totals (3g.40gb 40320MiB) and one process."""
    init_host(tmp_path, "H100-SXM5-80GB", 1, driver="535.104.12", mig=True)
    assert smi(tmp_path, "mig", "-cgi", "9,14,19,19", "-C")[0] == 0
    p = sleeper()
    dev = SimHost(tmp_path).read().mig_devices(0)[3]
    SimHost(tmp_path).attach(dev.uuid, p.pid, 1668, "/usr/bin/python3")
    ((_, expected),) = blocks(PUBLIC / "h100-sxm5_nvidia-smi-r535_1.txt")
    got = smi(tmp_path)[1][1:]
    # the driver counts a process's context beside its own memory: 1688 (device) vs 1668 (process), 1764 in all
    got = [ln.replace("1680MiB /  9984MiB", "1688MiB /  9984MiB").replace(f"{p.pid:>11}", f"{51445:>11}") for ln in got]
    expected = [ln.replace("               2MiB / 16383MiB", "               0MiB / 16383MiB") for ln in expected]
    assert unused(mask(got), 81559) == unused(mask(expected), 81559)


# -- the newer drivers' text ---------------------------------------------------------------------------------


def test_r580_a100_lgip_81_columns_lgi_59_and_the_main_table(tmp_path, smi):
    """[U] 580.126.09: the 81-column -lgip (Free counts before and after a 4g.20gb), creations on a swapped
    board (its `-cgi 4g.20gb` line says ID 1 where its -lgi says 2: the second self-contradicting capture), the
    59-column -lgi and the R580 table (`+---+` rule under the version line, "Shared Memory-Usage" headers,
    36/71/142 MiB idle use; BAR1 totals of this VM and its parent total are masked)."""
    init_host(tmp_path, "A100-SXM4-40GB", 1, driver="580.126.09", mig=True, swapped=[0])
    bl = blocks(PUBLIC / "a100-40gb_lgip-cgi-lgi-r580_1.txt")
    assert smi(tmp_path, *bl[0][0]) == (0, bl[0][1])
    rc, got = smi(tmp_path, *bl[1][0])
    assert got == [bl[1][1][0].replace("ID  1 on", "ID  2 on")]
    for cmd, out in bl[2:6]:
        assert smi(tmp_path, *cmd) == (0, out), cmd
    smi(tmp_path, "mig", "-gi", "2", "-cci")
    smi(tmp_path, "mig", "-gi", "3", "-cci", "1c.2g.10gb,1c.2g.10gb")
    smi(tmp_path, "mig", "-gi", "9", "-cci")
    cmd, out = bl[6]
    bar1 = re.compile(r"0MiB / +\d+MiB    \|")
    total = re.compile(r"/ +\d+MiB \|(?=     N/A)")
    norm = lambda ls: [total.sub("/ T |", bar1.sub("0MiB / B    |", ln)) for ln in mask(ls)]  # noqa: E731
    assert norm(smi(tmp_path, *cmd)[1][1:]) == norm(out)


def test_r580_header_rule_and_names_of_the_wide_layout(tmp_path, smi):
    """Project-HAMi/HAMi#1903, 580.119.02: `+---+` under the version line, full product names, 81920MiB."""
    init_host(tmp_path, "A800-80GB-PCIE", 2, driver="580.119.02")
    expected = (PUBLIC / "a800-80gb-pcie_nvidia-smi_1.txt").read_text().splitlines()[3:]
    assert mask(smi(tmp_path)[1][1 : len(expected) + 1]) == mask(expected)


def test_r550_and_r535_headers(tmp_path, smi):
    """The 91-column R550 header (NVIDIA/dcgm-exporter#272) and the 89-column R535 one with an unprivileged
    caller's `N/A` parent memory (NVIDIA/DCGM#152, in a pod)."""
    init_host(tmp_path / "a", "A100-PCIE-40GB", 1, driver="550.54.14", mig=True)
    expected = (PUBLIC / "a100-pcie-40gb_nvidia-smi_2.txt").read_text().splitlines()[1:]
    got = smi(tmp_path / "a")[1][1 : len(expected) + 1]
    assert unused(mask(got), 40960) == unused(mask(expected), 40960)
    init_host(tmp_path / "b", "A100-SXM4-80GB", 4, driver="535.104.05", mig=True, privileged=False)
    expected = (PUBLIC / "a100-80gb_nvidia-smi_2.txt").read_text().splitlines()[3:]
    got = smi(tmp_path / "b", "-i", "3")[1]
    assert mask(got[1:8]) == mask(expected[:7])  # version line, rule, column heads
    # the paste repeats a rule after the heads and cuts the bus id short; the GPU rows otherwise match
    assert mask(got[9:11]) == mask(expected[9:11])
    assert mask(got[13:15]) == mask(expected[13:15])  # the MIG-devices title


def test_r510_mig_off_on_and_one_device(tmp_path, smi):
    """yokatayama/e-learning, 510.47.03 on ESXi: the table with MIG off, with MIG on and no devices, and with one
    1g.5gb (GI 11 on a swapped board, 0MiB idle use, 8191MiB BAR1). The VM reports CUDA `N/A`."""
    init_host(tmp_path, "A100-PCIE-40GB", 1, driver="510.47.03", vm=True, swapped=[0])
    bl = [(c, o) for c, o in blocks(PUBLIC / "a100-pcie-40gb_nvidia-smi_1.txt")]
    cuda = lambda ls: [ln.replace("CUDA Version: 11.6 ", "CUDA Version: N/A  ") for ln in ls]  # noqa: E731
    assert mask(cuda(smi(tmp_path)[1][1:])) == mask(bl[0][1][1:])
    SimHost(tmp_path).set_mig_mode(0, True)
    SimHost(tmp_path).reboot()
    assert mask(cuda(smi(tmp_path)[1][1:])) == mask(bl[2][1][1:])
    smi(tmp_path, "mig", "-cgi", "19:0", "-C")
    assert mask(cuda(smi(tmp_path)[1][1:])) == mask(bl[3][1][1:])


def test_rtx_pro_6000_rows_and_lgip(tmp_path, smi):
    """bigstack-oss/cubecos#312: the wide layout cuts the name to `NVIDIA RTX PRO 6000 Blac...`, 97887MiB; the
    81-column -lgip of the RTX PRO 6000 (ids 14, 21, 47, 65, 67 in that order, 23.12 GiB)."""
    init_host(tmp_path, "RTX-PRO-6000-BLACKWELL", 3)
    SimHost(tmp_path).set_mig_mode(2, True)
    expected = (PUBLIC / "rtx-pro-6000_nvidia-smi_1.txt").read_text().splitlines()[1:]
    got = smi(tmp_path)[1]
    start = got.index(expected[0])
    assert unused(mask(got[start : start + len(expected)]), 97887) == unused(mask(expected), 97887)
    ((cmd, out),) = blocks(PUBLIC / "rtx-pro-6000_lgip_1.txt")
    init_host(tmp_path / "one", "RTX-PRO-6000-BLACKWELL", 1, mig=True)
    rc, got = smi(tmp_path / "one", *cmd)
    assert got[: len(out) - 1] == out[:-1]  # the paste stops inside the +me.all row
    assert got[len(out) - 1] == out[-1]
