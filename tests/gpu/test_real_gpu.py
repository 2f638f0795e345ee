"""Read-only checks on a real NVIDIA GPU (marker `gpu`; run with `MIGBENCH_TEST_GPU=1 python -m pytest -m gpu -s`).

They read what the driver reports and compare it with what the catalogue and the simulated driver claim: the
profile table (MIG on and off), placements, memory by driver, GPU-instance ids, the `-L`/`-lgi`/plain text
shapes and NVML's error strings. Every difference is printed (run with `-s` to see them, and record them in
docs/fidelity-findings.md); a test fails only where migbench would plan or act wrongly (a catalogue memory
above the real one, an id rule that fits neither numbering). Nothing here changes MIG mode, creates or
destroys instances, or resets a GPU.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

pytestmark = pytest.mark.gpu


def _smi(*args: str) -> tuple[int, str]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        pytest.skip("nvidia-smi is not on PATH")
    p = subprocess.run([exe, *args], capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout + p.stderr


@pytest.fixture(scope="module")
def host():  # type: ignore[no-untyped-def]
    """The host as NVML reports it (through migbench's reader; the real libnvidia-ml)."""
    from migbench.backend.nvml import NvmlReader

    reader = NvmlReader()
    try:
        state = reader.read()
    except Exception as exc:  # no driver, no GPU: nothing to compare
        pytest.skip(f"NVML is not usable here: {exc}")
    finally:
        reader.close()
    if not state.gpus:
        pytest.skip("NVML sees no GPU")
    return state


def _report(title: str, diffs: list[str]) -> None:
    print(f"\n== {title}: {'no differences' if not diffs else f'{len(diffs)} difference(s)'}")
    for d in diffs:
        print("  " + d)


def test_profile_table_matches_the_catalogue(host):  # type: ignore[no-untyped-def]
    """With MIG on, NVML's profile table against the catalogue's for this driver: ids, slices, counts,
    placements, SMs, memory. With MIG off, NVML lists no profiles (migbench then uses the catalogue)."""
    from migbench.catalog import default_catalog

    cat = default_catalog()
    over: list[str] = []
    for g in host.gpus:
        key = cat.find_by_pci(g.pci_device_id) or cat.find_key(g.name)
        if key is None:
            _report(f"GPU {g.index} {g.name}", ["not in the catalogue: teach it with `migbench catalog import`"])
            continue
        want = cat.model(key, host.driver)
        if not g.mig_current:
            rc, out = _smi("mig", "-i", str(g.index), "-lgip")
            _report(
                f"GPU {g.index} {g.name} MIG off: `nvidia-smi mig -lgip`",
                [] if "No MIG-enabled devices found" in out else [f"printed {out.strip()!r} (the simulator prints 'No MIG-enabled devices found.')"],
            )
            continue
        live = g.model
        assert live is not None
        diffs = []
        for lp in live.profiles:
            if not want.has_profile(lp.name):
                diffs.append(f"{lp.name} (id {lp.id}) is not in the catalogue")
                continue
            cp = want.profile(lp.name)
            for what, a, b in [
                ("id", cp.id, lp.id),
                ("compute slices", cp.compute_slices, lp.compute_slices),
                ("memory slices", cp.memory_slices, lp.memory_slices),
                ("max", cp.max_count, lp.max_count),
                ("starts", cp.starts, lp.starts),
                ("SMs", cp.engines.sm, lp.engines.sm),
                ("memory MiB", cp.memory_mib, lp.memory_mib),
            ]:
                if a != b:
                    diffs.append(f"{lp.name} {what}: catalogue {a} ({cp.memory_source if what == 'memory MiB' else ''}), NVML {b} on {host.driver}")
            if cp.memory_mib and lp.memory_mib and cp.memory_mib > lp.memory_mib:
                over.append(f"GPU {g.index} {lp.name}: catalogue {cp.memory_mib} > NVML {lp.memory_mib} MiB")
        for cp in want.profiles:
            if not live.has_profile(cp.name):
                diffs.append(f"{cp.name} is in the catalogue but not in NVML's table")
        _report(f"GPU {g.index} {g.name} ({key}) profile table on driver {host.driver}", diffs)
    assert not over, "the catalogue promises more memory than the driver gives: " + "; ".join(over)


def test_gpu_instance_ids_follow_one_of_the_two_numberings(host):  # type: ignore[no-untyped-def]
    """Existing GPU instances (read only) against the id rule of docs/mig-facts.md#gi-ids; prints which
    numbering each board uses (`swapped` in the simulator)."""
    from migbench.backend.sim.rules import gpu_instance_id

    bad = []
    for g in host.gpus:
        if not g.mig_current or not g.instances or g.model is None:
            continue
        fits = [sw for sw in (False, True) if all(gi.id == gpu_instance_id(g.model, gi.start, gi.size, sw) for gi in g.instances)]
        _report(
            f"GPU {g.index} instance ids", [] if fits else ["neither numbering fits: " + ", ".join(f"id {gi.id} at {gi.start}:{gi.size}" for gi in g.instances)]
        )
        print(f"  GPU {g.index}: swapped={fits}")
        if not fits:
            bad.append(g.index)
    assert not bad


def test_L_and_lgi_text_has_the_simulator_shape(host):  # type: ignore[no-untyped-def]
    """`nvidia-smi -L` and `mig -lgi` parse, agree with NVML, and have the widths the simulator prints for this
    driver; the plain table's width too."""
    from migbench.backend import smi
    from migbench.catalog import parse_driver

    rc, out = _smi("-L")
    listed = smi.parse_L(out)
    assert [x.uuid for x in listed.gpus] == [g.uuid for g in host.gpus]
    diffs = []
    for g in host.gpus:
        if len(listed.devices_of(g.index)) != len(g.devices):
            diffs.append(f"GPU {g.index}: -L lists {len(listed.devices_of(g.index))} MIG devices, NVML {len(g.devices)}")
    v = parse_driver(host.driver)
    assert v is not None
    rc, out = _smi("mig", "-lgi")
    if rc == 0:
        rows = smi.parse_lgi(out)
        nvml = sorted((g.index, gi.id, gi.start, gi.size) for g in host.gpus for gi in g.instances)
        if sorted((r.gpu, r.instance_id, r.start, r.size) for r in rows) != nvml:
            diffs.append(f"-lgi rows {rows} differ from NVML's {nvml}")
        width = len(out.splitlines()[0])
        expect = 59 if v >= (570,) else 57
        if width != expect:
            diffs.append(f"-lgi is {width} columns on {host.driver}; the simulator prints {expect}")
    rc, out = _smi()
    bar = next((ln for ln in out.splitlines() if ln.startswith("+")), "")
    expect = 79 if v < (530,) else 89 if v < (550,) else 91
    if len(bar) != expect:
        diffs.append(f"the plain table is {len(bar)} columns on {host.driver}; the simulator prints {expect}")
    _report("text shapes", diffs)


def test_nvml_error_strings_match_the_simulator(host):  # type: ignore[no-untyped-def]
    """The text the real nvmlErrorString gives for the codes migbench handles, against the simulator's."""
    import pynvml

    from migbench.backend.sim.errors import error_string

    diffs = []
    pynvml.nvmlInit()
    try:
        for code in (
            pynvml.NVML_ERROR_INVALID_ARGUMENT,
            pynvml.NVML_ERROR_NOT_SUPPORTED,
            pynvml.NVML_ERROR_NO_PERMISSION,
            pynvml.NVML_ERROR_NOT_FOUND,
            pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES,
            pynvml.NVML_ERROR_IN_USE,
            pynvml.NVML_ERROR_MEMORY,
        ):
            real = pynvml.nvmlErrorString(code)
            real = real.decode() if isinstance(real, bytes) else str(real)
            if real != error_string(code):
                diffs.append(f"code {code}: real {real!r}, simulator {error_string(code)!r}")
    finally:
        pynvml.nvmlShutdown()
    _report("NVML error strings", diffs)
