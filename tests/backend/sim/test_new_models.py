"""Blackwell and GH200 on the simulated driver (issue 14, item 2): `sim init` works and shows what is inferred,
and the host applies every maximal layout of each new model and reads it back through NVML (RTX PRO 6000 in
the quick loop, the 78-layout models slow)."""

from __future__ import annotations

import pytest

from migbench.backend.sim.host import init_host
from migbench.catalog import Catalog
from tests.support.cli import migbench

CAT = Catalog.load(include_user=False)


@pytest.mark.slow
def test_sim_init_blackwell_shows_the_unverified_values(tmp_path):
    r = migbench("sim", "init", str(tmp_path / "b"), "--gpu", "B200", "--count", "2", "--mig", "on")
    assert r.returncode == 0, r.stderr
    assert "2 x NVIDIA B200 (B200), driver 570.133.20, MIG on" in r.stdout
    assert "unverified: placements: no B200 -lgipp published" in r.stdout
    assert "3g.90gb (id, starts, memory, engines)" in r.stdout
    for key, driver in [("GB200", "570.133.20"), ("GH200-144GB", "550.90.07"), ("RTX-PRO-6000-BLACKWELL", "575.51.03")]:
        assert init_host(tmp_path / key, key, 1).read().driver == driver
    r = migbench("sim", "init", str(tmp_path / "g"), "--gpu", "GH200-96GB")
    assert r.returncode == 1 and "does not know the memory of GH200-96GB" in r.stderr


# Every maximal layout of these models is applied and read back (memory too) by
# tests/apply/test_reconcile.py, which covers every simulable model.
