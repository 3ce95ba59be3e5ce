"""Static tools (no GPU needed): ``python -m benchmarks.static`` compiles every kernel config for
sm_80/sm_90 and reads its SASS against a reference GEMM's; ``python -m
benchmarks.static.compile_count`` counts the compiles an MNIST run makes.

    cases.py           what is compiled: every case from the launchers' own launches
    compile.py         triton.compile and cuobjdump per job, keys, the process pool
    sass.py            reading SASS and PTX: the main loop, spills, MMA kinds
    report.py          targets, table, JSON; the saved report read back
    reference_gemm.py  the plain tiled GEMM each convolution is set beside
    compile_count.py   compiles and tuning runs of a sequence of launches

The report is explained in benchmarks/README.md.
"""
