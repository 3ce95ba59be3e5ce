"""Benchmarks of our Triton kernels against torch (cuDNN) measured in the same run.

    python -m benchmarks [--ops conv2d,max_pool2d] [--shapes resnet18] [--dtypes bf16,tf32]
                         [--layouts channels_last] [--out DIR]
    python -m benchmarks.gpu_check --out DIR --mnist-dir DIR     # everything a GPU run needs

Without a CUDA device ``python -m benchmarks`` runs each op once through Triton's interpreter
on a tiny shape (a smoke check, never a performance figure), prints the static sm_90 report of
every kernel config and the roofline arithmetic of every benchmark shape. See README.md here.
"""
