"""The paper profile's loaders, on tiny random models of SD's classes saved in SD's folder layout."""

from __future__ import annotations

import time

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import save_file

from yonos.config import load_params
from yonos.errors import UserError
from yonos.weights import sd_dir, sha256


@pytest.fixture()
def tiny_sd(tmp_path):
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32),
                                layers_per_block=1, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=16,
                                attention_head_dim=8, norm_num_groups=8)
    vae = AutoencoderKL(block_out_channels=(8, 8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, norm_num_groups=8)
    unet.save_pretrained(tmp_path / "sd" / "unet")
    vae.save_pretrained(tmp_path / "sd" / "vae")
    save_file({"null_text_embedding": torch.randn(1, 77, 16)}, tmp_path / "sd" / "null_text_embedding.safetensors")
    return tmp_path / "sd", unet


def paper_cfg(repo_root, folder, **sd):
    cfg = load_params(repo_root / "params.yaml", "paper")
    cfg["sd"] = dict(cfg["sd"], local_dir=str(folder), **sd)
    return cfg


def test_missing_weights_fail_fast_naming_what_and_where(repo_root, tmp_path, monkeypatch):
    monkeypatch.delenv("YONOS_SD_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(UserError) as err:
        sd_dir(paper_cfg(repo_root, tmp_path / "nowhere"))
    assert time.perf_counter() - t0 < 5
    msg = str(err.value)
    assert "nowhere" in msg and "unet/diffusion_pytorch_model.safetensors" in msg and "YONOS_SD_DIR" in msg
    assert "\n" not in msg


def test_sd_unet_loads_widened_with_the_pretrained_function(repo_root, tiny_sd, monkeypatch):
    from yonos.weights import load_sd_unet

    folder, original = tiny_sd
    monkeypatch.delenv("YONOS_SD_DIR", raising=False)
    unet, null_emb = load_sd_unet(paper_cfg(repo_root, folder))
    assert unet.config.in_channels == 8 and null_emb.shape == (1, 77, 16)
    z_t, t = torch.randn(1, 4, 8, 8), torch.tensor([999])
    with torch.no_grad():
        want = original.eval()(z_t, t, encoder_hidden_states=null_emb).sample
        got = unet.eval()(torch.cat([z_t, torch.randn(1, 4, 8, 8)], 1), t, encoder_hidden_states=null_emb).sample
    assert torch.equal(want, got)


def test_sha256_pins_are_enforced(repo_root, tiny_sd, monkeypatch):
    folder, _ = tiny_sd
    monkeypatch.delenv("YONOS_SD_DIR", raising=False)
    rel = "unet/diffusion_pytorch_model.safetensors"
    assert sd_dir(paper_cfg(repo_root, folder, sha256={rel: sha256(folder / rel)})) == folder
    with pytest.raises(UserError, match="is not the pinned"):
        sd_dir(paper_cfg(repo_root, folder, sha256={rel: "0" * 64}))


def test_sd_vae_is_imported_into_the_run(repo_root, tiny_sd, tmp_path, monkeypatch):
    from yonos.weights import import_sd_vae

    folder, _ = tiny_sd
    monkeypatch.delenv("YONOS_SD_DIR", raising=False)
    import_sd_vae(paper_cfg(repo_root, folder), tmp_path / "run")
    assert AutoencoderKL.from_pretrained(tmp_path / "run" / "vae").config.block_out_channels == [8, 8, 8, 8]
