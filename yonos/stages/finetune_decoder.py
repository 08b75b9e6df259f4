"""finetune_decoder: freeze the one-step U-Net, fine-tune the decoder D on the latents it actually
produces at inference (one DDIM step from z_T), against the HR image [paper]. `decoder.latents:
autoencoder` trains it on E(HR) instead: the control of the study arm `decoder_control`, which asks whether
the gain comes from the one-step latents or from more decoder training.

Loss [choice]: L1 + w * perceptual. The perceptual term is LPIPS (pyiqa, AlexNet) when its weights
are present locally, otherwise 1 - SSIM (torchmetrics, differentiable); the term used is written to
metrics.json and named in the report. Writes runs/<profile>/finetune_decoder/checkpoint/.
"""

from __future__ import annotations

from yonos.config import run_dir
from yonos.io import write_json
from yonos.metrics import registry
from yonos.stages._common import stage_main
from yonos.stages._unet import example_stream, from_checkpoint, task_for
from yonos.train import DecoderOnly, decoder_loss, fit, fit_timing, make_accelerator

NAME = "finetune_decoder"


def perceptual_term(kind: str, device) -> tuple[str, object]:
    """(name actually used, differentiable loss(sr, hr) on [0, 1] images)."""
    name = "ssim"
    if kind == "lpips":
        reason = registry.missing_reason(registry.get("lpips"))
        if reason is None:
            import pyiqa

            return "lpips", pyiqa.create_metric("lpips", as_loss=True, device=device,
                                               **registry.path_kwargs(registry.get("lpips")))
        kind, name = "ssim", "1-ssim (fallback: LPIPS weights missing)"
        print(f"[{NAME}] LPIPS unavailable ({reason}); using the documented fallback 1 - SSIM")
    if kind == "ssim":
        from torchmetrics.functional.image import structural_similarity_index_measure as ssim

        return name, lambda sr, hr: 1.0 - ssim(sr, hr, data_range=1.0)
    raise ValueError(f"params.yaml: decoder.perceptual must be lpips or ssim, got {kind!r}")


def run(cfg: dict) -> dict:
    dcfg, scale = cfg["decoder"], cfg["distill"]["scales"][-1]
    pipe = from_checkpoint(run_dir(cfg, "distill_student", f"x{scale}", "checkpoint"))
    accelerator = make_accelerator(cfg)
    device = accelerator.device
    pipe.to(device)
    pipe.unet.eval().requires_grad_(False)
    task = task_for(cfg, pipe)  # freezes the whole VAE; the decoder is unfrozen next
    pipe.vae.decoder.requires_grad_(True)
    pipe.vae.post_quant_conv.requires_grad_(True)
    used, perceptual = perceptual_term(dcfg["perceptual"], device)
    loss = lambda model, batch: decoder_loss(model, batch, task=task, unet=pipe.unet, scheduler=pipe.scheduler,
                                             scale=scale, perceptual=perceptual,
                                             perceptual_weight=dcfg["perceptual_weight"],
                                             latents=dcfg.get("latents", "onestep"))
    result = fit(
        DecoderOnly(pipe.vae), loss,
        lambda n: example_stream(cfg, n, stream="decoder", with_noise=False),
        accelerator=accelerator, steps=dcfg["steps"], batch_size=dcfg["batch_size"], lr=dcfg["lr"],
        desc="decoder fine-tuning",
    )
    pipe.vae.eval().requires_grad_(False)
    out = run_dir(cfg, NAME)
    pipe.save_pretrained(out / "checkpoint", stage=NAME, decoder_perceptual=used)
    write_json(out / "metrics.json", {"perceptual_term": used, "steps": result.steps,
                                      "final_loss": result.final_loss})
    return {"timing": fit_timing(result)}


def main() -> int:
    return stage_main(NAME, run)


if __name__ == "__main__":
    raise SystemExit(main())
