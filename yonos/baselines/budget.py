"""The equal-budget rule: every SR method trains for as many optimiser steps as YONOS does.

After the shared stages (autoencoder, prior), YONOS spends `teacher.steps` on the teacher and
`distill.steps` on each link of its distillation chain. Each baseline gets that total, at the same
batch size (`train.batch_size`), from the same latent bank; the decoder-side stages (YONOS's decoder
fine-tuning, StableSR's CFW) get `decoder.steps` each. The ablation `train_direct` is not a method and is
not counted. Derived here rather than typed into each baseline's params section, so the budgets cannot drift.
"""

from __future__ import annotations


def sr_steps(cfg: dict) -> int:
    """YONOS's U-Net optimiser steps: teacher + one distillation per link of the scale chain."""
    links = len(cfg["distill"]["scales"]) - 1
    return int(cfg["teacher"]["steps"]) + links * int(cfg["distill"]["steps"])


def decoder_steps(cfg: dict) -> int:
    """Optimiser steps of a decoder-side stage (YONOS decoder fine-tuning, StableSR's CFW)."""
    return int(cfg["decoder"]["steps"])


def batch_size(cfg: dict) -> int:
    return int(cfg["train"]["batch_size"])


def describe(cfg: dict) -> dict:
    """The rule with its numbers, for checkpoints' configs and the report."""
    return {"sr_steps": sr_steps(cfg), "decoder_steps": decoder_steps(cfg), "batch_size": batch_size(cfg),
            "rule": "each method: teacher.steps + distill.steps x links optimiser steps at train.batch_size; "
                    "decoder-side stages: decoder.steps"}
