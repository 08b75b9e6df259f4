"""Baseline methods re-implemented on the library's shared pieces (diffusers models, schedulers, tiling).

One small module per method (stablesr, ...), plus what several share (colour fixes). Adapters in
`methods/` load their checkpoints and implement the `upscale` contract.
"""
