"""Triton kernels of the video DiT. Their plain PyTorch definitions and oracles live outside this
package, so the plain path never imports Triton: Grid Reshape and the reference temporal attention in
`ea_dit.grid_reshape`, the reference attention in `ea_dit.attention`.

- `temporal_attention`: fused flash attention (forward + backward) reading q/k/v in the spatial
  `(B*F, N, H, D)` layout with Grid Reshape folded into its indexing; its core also serves
- `flash_attention`: generic multi-head attention with a key-padding mask (the "triton" backend of
  `ea_dit.attention.attention`).
- `grid_reshape`: standalone Grid Reshape / inverse kernels with autograd (`grid_reshape_triton`).

Import the submodules directly; they import triton, which must see TRITON_INTERPRET=1 on a CPU.
"""
