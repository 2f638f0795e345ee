"""Capture directories (as `migbench doctor --capture` writes them) assembled from the real
nvidia-smi captures in tests/data/samples/ (docs/captures.md): each file holds the output that
followed one command in a published terminal session."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from tests.support import DATA

SAMPLES = DATA / "samples"
# A shell prompt (`$ `, `[user@host dir]# `, `root@host:~# `) before an nvidia-smi command.
_PROMPT = re.compile(r"^(?:\$ |\[[^\]]*\][#$]?\s*|\S+@\S+[#$]\s*)?(?:sudo\s+)?nvidia-smi(?:\s+(.*))?$")


def blocks(path: Path, *, others: bool = False) -> list[tuple[list[str], list[str]]]:
    """(nvidia-smi argv, output lines) for each command of a capture file (its first line is its
    header), blank lines around each output dropped. With `others`, a `$ COMMAND` that is not
    nvidia-smi starts a block of its own, `(["<other>", COMMAND], lines)`; else its lines belong to
    the block before."""
    out: list[tuple[list[str], list[str]]] = []
    for line in path.read_text().splitlines()[1:]:
        m = _PROMPT.match(line.strip())
        if m:
            out.append((shlex.split(m.group(1) or ""), []))
        elif others and line.startswith("$ "):
            out.append((["<other>", line[2:]], []))
        elif out:
            out[-1][1].append(line)
    for _, lines in out:
        while lines and not lines[-1].strip():
            lines.pop()
        while lines and not lines[0].strip():
            lines.pop(0)
    return out


def section(sample: str, args: str, occurrence: int = -1) -> str:
    """The output that followed `nvidia-smi ARGS` in a sample file (the last time, by default),
    up to the next nvidia-smi prompt."""
    lines = (SAMPLES / sample).read_text().splitlines()
    starts = []
    for i, line in enumerate(lines):
        m = _PROMPT.match(line.strip())
        if m:
            starts.append((i, " ".join((m.group(1) or "").split())))
    found = [n for n, (_, a) in enumerate(starts) if a == args]
    if not found:
        raise KeyError(f"{sample}: no `nvidia-smi {args}`")
    n = found[occurrence]
    begin = starts[n][0] + 1
    end = starts[n + 1][0] if n + 1 < len(starts) else len(lines)
    return "\n".join(lines[begin:end]) + "\n"


def a100_pcie_40gb(dest: Path) -> Path:
    """An A100-PCIE-40GB on ESXi, driver 510.47.03 (yokatayama/e-learning): -L, -lgi, -lci and -lgip of
    that host; -lgipp from the MIG User Guide (A100-40GB: the same placements)."""
    dest.mkdir(parents=True, exist_ok=True)
    host = "public/a100-pcie-40gb_cgi-lgi_1.txt"
    (dest / "nvidia-smi-L.txt").write_text(section(host, "-L"))
    (dest / "mig-lgi.txt").write_text(section(host, "mig -lgi"))
    (dest / "mig-lci.txt").write_text(section(host, "mig -i 0 -lci"))
    (dest / "mig-lgip.txt").write_text(section("a100-40gb_lgip_1.txt", "mig -lgip"))
    (dest / "mig-lgipp.txt").write_text(section("a100-40gb_lgipp_1.txt", "mig -lgipp"))
    return dest


def h100_pcie(dest: Path) -> Path:
    """An H100 PCIe, driver 525.125.06 (scaleway/docs-content) after `-cgi 9,19,19,19 -C`: -L, -lgi
    and -lgipp of that host; no -lgip, -lci or -q."""
    dest.mkdir(parents=True, exist_ok=True)
    host = "public/h100-pcie_cgi-C-lgi-L_1.txt"
    (dest / "nvidia-smi-L.txt").write_text(section(host, "-L"))
    (dest / "mig-lgi.txt").write_text(section(host, "mig -lgi"))
    lgipp = section("h100-pcie_lgipp-lgi_1.txt", "mig -lgipp")  # the file goes on with -lgi rows, without a prompt
    (dest / "mig-lgipp.txt").write_text("".join(ln + "\n" for ln in lgipp.splitlines() if ln.startswith("GPU")))
    return dest
