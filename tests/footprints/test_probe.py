"""`migbench profile` on a simulated host: real toy-trainer processes pinned to MIG devices, their
peaks sampled through NVML and reported by the run, probes stopped at their limit, the host left
as it was found."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from migbench.backend.sim import fake_nvml
from migbench.backend.sim.host import SimHost, init_host
from migbench.footprints import load_footprints
from migbench.footprints.probe import ProbeOptions, Profiler, profile
from migbench.footprints.select import ProbeTarget
from migbench.sweep import load_sweep
from tests.support.launchkit import TOY_CMD
from tests.support.simhelp import sim_backend

FAST = ProbeOptions(steps=2, seconds=60.0, grace_s=0.3, sample_s=0.02)
"""Each probe ends after two steps of the toy trainer (MIGBENCH_PROBE_STEPS), however long its
start-up takes on a loaded machine; the limit is a safety net."""


@pytest.fixture
def host(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    """`host(gpus=1, model=...)`: a simulated host with MIG on, MIGBENCH_SIM set; the sweep dir."""

    def make(gpus: int = 1, model: str = "A100-SXM4-80GB") -> tuple[Path, Path]:
        sim = tmp_path / "sim"
        init_host(sim, model, gpus, mig=True)
        monkeypatch.setenv("MIGBENCH_SIM", str(sim))
        work = tmp_path / "work"
        work.mkdir(exist_ok=True)
        return sim, work

    yield make
    fake_nvml.uninstall()


def write_sweep(work: Path, body: str, name: str = "s") -> Path:
    p = work / f"{name}.yaml"
    p.write_text(textwrap.dedent(body).replace("{toy}", TOY_CMD).replace("NAME", name).replace("WORK", str(work)))
    return p


def release_once_sampled(monkeypatch: pytest.MonkeyPatch, hold_file: Callable[[ProbeTarget], tuple[Path, int]]) -> None:
    """Each probe's NVML sample that sees more than `hold_file(probe)[1]` MiB creates the file
    `hold_file(probe)[0]`, which the toy trainer waits for (`--hold-file`, `--spike-hold-file`)
    before it lets the memory go: the sampler sees the peak however loaded the machine (a two-step
    probe at 0.1 s a step was sampled 13 times in 5 s under load, none at its peak)."""
    sample = Profiler._sample

    def sampled(self: Profiler) -> None:
        sample(self)
        for a in list(self.active.values()):
            path, above = hold_file(a.target)
            if a.nvml_peak is not None and a.nvml_peak > above:
                Path(path).touch()

    monkeypatch.setattr(Profiler, "_sample", sampled)


def layout(sim: Path) -> list[tuple[int, int, int]]:
    return sorted((g.index, gi.profile_id, gi.start) for g in SimHost(sim).read().gpus for gi in g.gpu_instances)


@pytest.mark.slow
def test_profile_measures_what_the_toy_trainer_allocates_and_removes_its_instances(host, monkeypatch):
    sim, work = host(gpus=1)
    release_once_sampled(monkeypatch, lambda t: (work / f"seen-{t.run.params['batch']}", 1024))  # past its fixed part: its whole footprint
    sw = load_sweep(
        write_sweep(
            work,
            """
        version: 1
        name: NAME
        command: {toy} --steps 50 --step-seconds 0.1 --memory 1GiB --per-token 0.5MiB --batch {batch} --seq-len 1024 --lr {lr} --hold-file WORK/seen-{batch}
        parameters: {batch: [4, 16], lr: [0.1, 0.01]}
        memory: {measured: true, fallback: 12GiB, by: [batch]}
        """,
        )
    )
    before = layout(sim)
    res, fp, out = profile(sw, opts=FAST, backend=sim_backend(sim))
    assert out == work / "s.footprints.yaml" and load_footprints(out).measurements == fp.measurements
    peaks = {m.params["batch"]: m for m in fp.measurements}
    assert set(peaks) == {4, 16}  # one probe per batch size (the lr does not change the footprint)
    for batch, m in peaks.items():
        assert m.peak_mib == 1024 + batch * 512
        assert m.nvml_peak_mib == m.reported_peak_mib == m.peak_mib
        assert m.how == "nvml-process+run-report" and m.outcome == "finished" and not m.lower_bound
        assert m.gpu_model == "A100-SXM4-80GB" and m.instance_mib >= 12 * 1024 and m.simulated
        assert m.declared_mib == 12 * 1024 and m.samples > 0 and 0.2 <= m.probe_s < 30
    assert res.slots == 2 and not res.problems and res.measurements
    assert layout(sim) == before == []  # the probe layout is gone
    assert len({m.profile for m in fp.measurements}) >= 1


@pytest.mark.slow
def test_idle_instances_are_used_as_they_are_and_busy_ones_not_at_all(host, sleeper):
    sim, work = host(gpus=1)
    h = SimHost(sim)
    busy = h.create_gpu_instance(0, 9, 0)  # 3g.40gb@0, with a process on it
    ci = h.create_compute_instance(0, busy.id)
    idle = h.create_gpu_instance(0, 19, 4)  # 1g.10gb@4, idle
    h.create_compute_instance(0, idle.id)
    busy_uuid = next(d.uuid for d in h.read().mig_devices(0) if d.gi_id == busy.id and d.ci_id == ci.id)
    h.attach(busy_uuid, sleeper().pid, 100)
    before = layout(sim)
    sw = load_sweep(
        write_sweep(
            work,
            """
        version: 1
        name: NAME
        command: {toy} --steps 50 --step-seconds 0.1 --memory 2GiB --seed {seed}
        parameters: {seed: [0, 1]}
        memory: 4GiB
        """,
        )
    )
    res, fp, _ = profile(sw, opts=FAST, backend=sim_backend(sim))
    assert {m.profile for m in fp.measurements} == {"1g.10gb"} and len(fp.measurements) == 2, res.skipped
    assert all(m.peak_mib == 2048 for m in fp.measurements)
    assert layout(sim) == before and not res.problems
    assert res.slots == 1  # one idle instance: the two probes ran one after the other


@pytest.mark.slow
def test_a_hung_probe_is_stopped_at_its_limit(host):
    sim, work = host(gpus=1)
    sw = load_sweep(
        write_sweep(
            work,
            """
        version: 1
        name: NAME
        command: {toy} --steps 50 --step-seconds 0.1 --memory 3GiB --hang-at 2
        memory: 4GiB
        """,
        )
    )
    t0 = time.monotonic()
    res, fp, _ = profile(sw, opts=ProbeOptions(seconds=3.0, grace_s=0.5, sample_s=0.02), backend=sim_backend(sim))
    (m,) = fp.measurements
    assert m.outcome == "stopped" and m.peak_mib == 3072
    assert 3.5 <= m.probe_s < 6.0  # the limit, the grace it ignored SIGTERM for, then SIGKILL
    assert time.monotonic() - t0 < 20
    toys = [
        p
        for p in psutil.process_iter(["cmdline"])
        if any("toy_trainer" in c for c in (p.info["cmdline"] or [])) and str(work) in " ".join(p.info["cmdline"] or [])
    ]
    assert toys == [] and layout(sim) == []


@pytest.mark.slow
def test_an_oom_is_probed_again_on_a_larger_instance_or_kept_as_a_lower_bound(host):
    sim, work = host(gpus=1)
    h = SimHost(sim)
    for prof, start in ((19, 0), (9, 4)):  # 1g.10gb@0 and 3g.40gb@4
        gi = h.create_gpu_instance(0, prof, start)
        h.create_compute_instance(0, gi.id)
    sw = load_sweep(
        write_sweep(
            work,
            """
        version: 1
        name: NAME
        command: {toy} --steps 50 --step-seconds 0.1 --memory 1GiB --per-token 1MiB --batch {batch} --seq-len 1024
        parameters: {batch: [16, 64]}
        memory: 4GiB
        """,
        )
    )
    events = []
    res, fp, _ = profile(sw, opts=FAST, backend=sim_backend(sim), on_event=events.append)
    got = {m.params["batch"]: m for m in fp.measurements}
    assert got[16].peak_mib == 17408 and got[16].profile == "3g.40gb" and not got[16].lower_bound  # after an OOM on 1g.10gb
    assert got[64].lower_bound and got[64].outcome == "oom" and got[64].peak_mib == 40193  # more than the largest instance
    assert any(e.kind == "retry" and e.run_id == got[16].run for e in events)


@pytest.mark.slow
def test_steps_ask_the_run_to_stop_and_a_short_peak_is_seen(host, monkeypatch):
    sim, work = host(gpus=1)
    release_once_sampled(monkeypatch, lambda t: (work / "spiked", 2048))  # past its footprint: the spike
    sw = load_sweep(
        write_sweep(
            work,
            """
        version: 1
        name: NAME
        command: {toy} --steps 50 --step-seconds 0.2 --memory 2GiB --spike 3GiB --spike-seconds 0.4 --spike-hold-file WORK/spiked
        memory: 8GiB
        """,
        )
    )
    res, fp, _ = profile(sw, opts=ProbeOptions(steps=3, grace_s=0.3, sample_s=0.02), backend=sim_backend(sim))
    (m,) = fp.measurements
    assert m.outcome == "finished"  # MIGBENCH_PROBE_STEPS=3: it stopped by itself
    assert m.reported_peak_mib == 5120 and m.nvml_peak_mib == 5120 and m.peak_mib == 5120  # the 0.4 s spike, sampled


def test_release_removes_only_what_profile_created(tmp_path, monkeypatch):
    """A GPU profile filled is emptied in two commands; where someone else created an instance
    meanwhile, profile removes its own one by one, leaves theirs, and says the GPU changed."""
    from migbench.footprints.slots import prepare_slots, release

    sim = tmp_path / "sim"
    init_host(sim, "A100-SXM4-80GB", 3, mig=True)
    monkeypatch.setenv("MIGBENCH_SIM", str(sim))
    h = SimHost(sim)
    gi = h.create_gpu_instance(2, 0, 0)  # GPU 2: a 7g.80gb someone uses
    h.create_compute_instance(2, gi.id)
    try:
        be = sim_backend(sim)
        ph = prepare_slots(be, [4096, 4096, 30000], time_limit_s=2)
        assert {s.gpu for s in ph.slots if s.created} == {0, 1} and any(s.gpu == 2 and not s.created for s in ph.slots)
        theirs = next(pl for pl in (0, 1, 2, 3, 4, 5, 6) if all(not (g == 1 and p.start == pl) for g, p in ph.created))
        h.create_gpu_instance(1, 19, theirs)  # someone else, on GPU 1, while the probes ran
        be.writer.log.clear()
        problems = release(be, ph)
        cmds = [" ".join(c.argv) for c in be.writer.log]
        assert "nvidia-smi mig -i 0 -dci" in cmds and "nvidia-smi mig -i 0 -dgi" in cmds  # all of GPU 0 was ours
        assert not any(c.startswith("nvidia-smi mig -i 1 -d") and "-gi" not in c for c in cmds)  # GPU 1: one by one
        left = {(g.index, gg.profile_id, gg.start) for g in h.read().gpus for gg in g.gpu_instances}
        assert left == {(1, 19, theirs), (2, 0, 0)}
        assert problems == [f"GPU 1: its instances were no instance before profiling and are 1g.10gb@{theirs} now"]
    finally:
        fake_nvml.uninstall()


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM", "a driver error"])
def test_a_signal_while_profile_creates_its_probe_layout_removes_what_it_created(tmp_path, monkeypatch, sig):
    """Guards: a Ctrl-C (or, once profile took SIGTERM as one, a SIGTERM) while profile created its
    probe layout left the instances it had made on the GPUs; and a driver error there left them
    too, said as 'another migbench apply (PID <its own>) is changing this host's GPUs': the
    removal took the host lock profile itself still held."""
    import os
    import signal

    from migbench.errors import HardwareError, MigbenchError
    from migbench.footprints.probe import stops_as_interrupts
    from migbench.footprints.slots import prepare_slots

    sim = tmp_path / "sim"
    init_host(sim, "A100-SXM4-80GB", 1, mig=True)
    monkeypatch.setenv("MIGBENCH_SIM", str(sim))
    try:
        be = sim_backend(sim)
        real = be.writer.create_compute_instance

        def create(gpu, gid):  # type: ignore[no-untyped-def]
            out = real(gpu, gid)
            if sig == "a driver error":
                raise HardwareError("nvidia-smi failed")
            os.kill(os.getpid(), getattr(signal, sig))  # after the first instance is made
            return out

        monkeypatch.setattr(be.writer, "create_compute_instance", create)
        got: BaseException | None = None
        with stops_as_interrupts():  # as `profile` runs it: SIGTERM is its Ctrl-C
            try:
                prepare_slots(be, [4096, 4096, 4096], time_limit_s=2)
            except BaseException as exc:  # noqa: BLE001 - a KeyboardInterrupt escaping is the failure
                got = exc
        assert isinstance(got, MigbenchError), repr(got)
        if sig == "a driver error":
            assert got.message == "nvidia-smi failed", got.message
        else:
            assert got.exit_code == 128 + getattr(signal, sig) and f"profile interrupted by {sig}" in got.message, got.message
        assert SimHost(sim).read().gpus[0].gpu_instances == []
    finally:
        fake_nvml.uninstall()


@pytest.mark.slow
def test_a_ctrl_c_as_a_probe_starts_stops_that_probe_too(host, monkeypatch):
    """Guards: Ctrl-C (or SIGTERM) between the start of a probe's shim and its record left that probe
    out of the ones the interrupt stops: it ran on to its limit, and `profile` waited for it with
    the probe layout still on the GPU."""
    import os
    import signal

    from migbench.footprints import probe as probe_mod

    sim, work = host(gpus=1)
    sw = load_sweep(write_sweep(work, "version: 1\nname: NAME\ncommand: {toy} --steps 4000 --step-seconds 0.05 --memory 1GiB\nmemory: 2GiB\n"))
    real = probe_mod.spawn_shim
    shims = []

    def spawn_then_ctrl_c(adir):  # type: ignore[no-untyped-def]
        p = real(adir)
        shims.append(p)
        os.kill(os.getpid(), signal.SIGINT)  # the user's Ctrl-C, as the probe has just started
        return p

    monkeypatch.setattr(probe_mod, "spawn_shim", spawn_then_ctrl_c)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as a terminal gives it, however this test run was started
    res, _fp, _ = profile(sw, opts=ProbeOptions(seconds=120.0, grace_s=0.3, sample_s=0.02), backend=sim_backend(sim))
    assert res.interrupted and len(shims) == 1
    assert shims[0].poll() is not None, "the probe's shim was stopped"
    assert layout(sim) == []  # the probe layout is gone
