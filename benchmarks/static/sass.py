"""Reading a compiled kernel: resources from the cubin, the main loop from its SASS, MMA depth
from its PTX. Text in, numbers out; ``benchmarks.static.compile`` runs the tools.

The main loop is the largest address range closed by a backward branch (a ``BRA`` to a lower
address) that contains MMA instructions: the K loop of a GEMM, the tap/channel loop of an
implicit GEMM. In it are counted:
    instructions        every SASS instruction from the branch target to the branch
    mma                 HGMMA (sm_90 warpgroup MMA) or HMMA (sm_80 warp MMA), per kind
    LDGSTS              cp.async global -> shared copies, by width (.128 = 16 bytes)
    UTMALDG             TMA tile loads
    LDG / STS           plain global loads and shared stores (operands staged by registers)
    LDL / STL           local memory (spills) inside the loop
``wgmma.wait_group N`` in the PTX with N >= 1 means the next MMA group is issued before the
last one retires (N groups stay in flight); sm_80 has no such groups (0).
"""
import re

_INSTRUCTION_RE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;", re.IGNORECASE)
_BRANCH_RE = re.compile(r"^(?:@!?U?P\w+\s+)?BRA(?:\.\w+)*\s+(?:`\()?(?:\.L_x_\d+|0x([0-9a-f]+))",
                        re.IGNORECASE)
_MMA_RE = re.compile(r"\b(?:HGMMA|HMMA|IMMA|QMMA|UTCHMMA|UTCQMMA)[.\w]*")
_LOCAL_RE = re.compile(r"\b(STL|LDL)((?:\.\w+)*)")
_WIDTH_BYTES = {"U8": 1, "S8": 1, "U16": 2, "S16": 2, "64": 8, "128": 16}
_WAIT_GROUP_RE = re.compile(r"wgmma\.wait_group(?:\.sync)?(?:\.aligned)?\s+(\d+)")


def instructions(sass: str):
    """[(address, text)] of the SASS of one kernel, in address order (predicates kept)."""
    return [(int(a, 16), text.strip()) for a, text in _INSTRUCTION_RE.findall(sass)]


def _opcode(text: str) -> str:
    parts = text.split()
    if parts and parts[0].startswith("@"):
        parts = parts[1:]
    return parts[0] if parts else ""


def local_bytes(sass: str) -> dict:
    """Bytes stored to (STL) and loaded from (LDL) local memory, summed over the SASS."""
    spill = {"STL": 0, "LDL": 0}
    for op, mods in _LOCAL_RE.findall(sass):
        width = [_WIDTH_BYTES[m] for m in mods.split(".") if m in _WIDTH_BYTES]
        spill[op] += width[0] if width else 4
    return spill


def mma_kinds(sass: str) -> list:
    """The distinct tensor-core instructions of the SASS, e.g. ['HGMMA.64x128x16.F32']."""
    return sorted(set(_MMA_RE.findall(sass)))


def main_loop(sass: str):
    """The instructions [(address, text)] of the main loop (see the module docstring), or []
    when no backward branch encloses an MMA."""
    code = instructions(sass)
    best = []
    for i, (address, text) in enumerate(code):
        match = _BRANCH_RE.match(text)
        if not match or match.group(1) is None:
            continue
        target = int(match.group(1), 16)
        if target >= address:
            continue
        body = [(a, t) for a, t in code[:i + 1] if a >= target]
        if len(body) > len(best) and any(_MMA_RE.search(t) for _, t in body):
            best = body
    return best


def loop_counts(body) -> dict:
    """Instruction counts of a loop body [(address, text)] (see the module docstring)."""
    counts = {"instructions": len(body), "mma": 0, "ldgsts_16": 0, "ldgsts_narrow": 0,
              "tma": 0, "ldg": 0, "sts": 0, "lds": 0, "ldsm": 0, "local": 0}
    for _, text in body:
        op = _opcode(text)
        if _MMA_RE.match(op):
            counts["mma"] += 1
        elif op.startswith("LDGSTS"):
            counts["ldgsts_16" if ".128" in op else "ldgsts_narrow"] += 1
        elif op.startswith("UTMALDG"):
            counts["tma"] += 1
        elif op.startswith("LDGDEPBAR"):
            continue
        elif op.startswith("LDG"):
            counts["ldg"] += 1
        elif op.startswith("STS"):
            counts["sts"] += 1
        elif op.startswith("LDSM"):
            counts["ldsm"] += 1
        elif op.startswith("LDS"):
            counts["lds"] += 1
        elif op.startswith(("LDL", "STL")):
            counts["local"] += 1
    return counts


def operand_loads(counts: dict) -> str:
    """How the main loop brings its operands in: 'tma', 'cp.async16' (every copy 16 bytes, no
    register staging), 'cp.async' (some narrower copies), 'mixed' (copies and plain loads),
    'plain' (LDG + STS through registers), or '-' without a loop."""
    if not counts or not counts.get("instructions"):
        return "-"
    copies = counts["ldgsts_16"] + counts["ldgsts_narrow"]
    if counts["tma"]:
        return "tma" if not counts["ldg"] else "tma+plain"
    if copies and not counts["ldg"]:
        return "cp.async16" if not counts["ldgsts_narrow"] else "cp.async"
    if copies:
        return "mixed"
    return "plain" if counts["ldg"] else "-"


def mma_groups_in_flight(ptx: str) -> int:
    """The largest N of ``wgmma.wait_group N`` in the PTX: MMA groups left running while the
    next is issued (0: each waits for the last; also 0 on sm_80, which has no wgmma)."""
    return max((int(n) for n in _WAIT_GROUP_RE.findall(ptx)), default=0)


def analyze(sass: str, ptx: str) -> dict:
    """Everything the report takes from one kernel's SASS and PTX."""
    body = main_loop(sass)
    counts = loop_counts(body)
    spill = local_bytes(sass)
    per_mma = round(counts["instructions"] / counts["mma"], 2) if counts["mma"] else None
    return {
        "tensor_cores": mma_kinds(sass),
        "spill_store_bytes": spill["STL"], "spill_load_bytes": spill["LDL"],
        "loop": counts,
        "loop_instructions": counts["instructions"],
        "loop_mma": counts["mma"],
        "loop_instructions_per_mma": per_mma,
        "operand_loads": operand_loads(counts),
        "mma_in_flight": mma_groups_in_flight(ptx),
    }


__all__ = ["instructions", "main_loop", "loop_counts", "operand_loads", "mma_groups_in_flight",
           "local_bytes", "mma_kinds", "analyze"]
