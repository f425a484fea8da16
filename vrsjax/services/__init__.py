"""PyTorch services behind the JAX code: SAM2 (`sam2`), XMem (`xmem`), the jax <-> torch DLPack bridge (`bridge`),
the binary wire format (`wire`) and the out-of-process SAM2 workers (`server`).

This is the only package of vrsjax that imports torch, and only when a service is used: importing `vrsjax.services`,
`vrsjax.services.bridge`, `vrsjax.services.wire` or `vrsjax.services.server` imports no torch; importing
`vrsjax.services.sam2` (or constructing a `SAM2Service`) does.
"""
