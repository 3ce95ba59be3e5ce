"""benchmarks.static.sass: the SASS reader, on a hand-written listing."""
from benchmarks.static import sass

# A hand-written SASS listing: a prologue, a loop (0x0100-0x0160) with two HGMMAs, two 16-byte
# cp.async copies and a backward branch, a smaller loop without MMA, and the exit.
_SASS = """
        /*0000*/                   LDC R1, c[0x0][0x28] ;
        /*0010*/                   LDG.E R2, desc[UR4][R4.64] ;
        /*0100*/                   WARPGROUP.ARRIVE ;
        /*0110*/                   HGMMA.64x128x16.F32 R24, gdesc[UR8], R24 ;
        /*0120*/                   HGMMA.64x128x16.F32 R24, gdesc[UR8], R24, gsb0 ;
        /*0130*/                   LDGSTS.E.BYPASS.128 [R35], desc[UR12][R24.64], P1 ;
        /*0140*/                   LDGSTS.E.BYPASS.128 [R35+0x1000], desc[UR12][R26.64], P2 ;
        /*0150*/                   IADD3 R3, R3, 0x1, RZ ;
        /*0160*/              @!P3 BRA 0x100 ;
        /*0170*/                   STL [R1], R3 ;
        /*0180*/                   LDL.64 R6, [R1] ;
        /*0190*/                   FADD R3, R3, R3 ;
        /*01a0*/               @P0 BRA 0x190 ;
        /*01b0*/                   EXIT ;
        /*01c0*/                   BRA 0x1c0;
"""
_PTX = "wgmma.wait_group.sync.aligned 1;\n wgmma.wait_group.sync.aligned 0;\n"


def test_sass_reader_finds_the_main_loop_and_counts_it():
    body = sass.main_loop(_SASS)
    assert [a for a, _ in body] == list(range(0x100, 0x170, 0x10))
    info = sass.analyze(_SASS, _PTX)
    assert info["loop_instructions"] == 7 and info["loop_mma"] == 2
    assert info["loop_instructions_per_mma"] == 3.5
    assert info["loop"]["ldgsts_16"] == 2 and info["loop"]["ldg"] == 0
    assert info["operand_loads"] == "cp.async16"
    assert info["mma_in_flight"] == 1
    assert info["tensor_cores"] == ["HGMMA.64x128x16.F32"]
    assert (info["spill_store_bytes"], info["spill_load_bytes"]) == (4, 8)
    # Plain loads in the loop, a wait for each group, no MMA anywhere.
    plain = _SASS.replace("LDGSTS.E.BYPASS.128 [R35]", "LDG.E.128 R8")
    assert sass.analyze(plain, "")["operand_loads"] == "mixed"
    assert sass.mma_groups_in_flight("wgmma.wait_group.sync.aligned 0;") == 0
    no_mma = sass.analyze(_SASS.replace("HGMMA", "FFMA"), "")
    assert no_mma["loop_instructions"] == 0 and no_mma["loop_instructions_per_mma"] is None
