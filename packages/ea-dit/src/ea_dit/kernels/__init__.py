"""Triton kernels of the video DiT, each next to its plain PyTorch reference.

- `temporal_attention`: fused flash attention (forward + backward) reading q/k/v in the spatial
  `(B*F, N, H, D)` layout with Grid Reshape folded into its indexing; its core also serves
- `flash_attention`: generic multi-head attention with a key-padding mask (the "triton" backend of
  `ea_dit.attention.attention`).
- `grid_reshape`: standalone Grid Reshape / inverse kernels with autograd.

Import the submodules directly; they import triton, which must see TRITON_INTERPRET=1 on a CPU.
"""
