"""Static tools: every kernel config compiled for sm_80/sm_90 without a GPU, its SASS read
against a reference GEMM's, and the compiles a run makes."""
