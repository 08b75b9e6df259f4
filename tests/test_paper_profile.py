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


def image_folder(folder, sizes, seed=0, prefix="img"):
    from yonos.io import save_image

    g = torch.Generator().manual_seed(seed)
    for i, (h, w) in enumerate(sizes):
        save_image(torch.rand(3, h, w, generator=g), folder / f"{prefix}{i}.png")


def folder_cfg(repo_root, tmp_path):
    cfg = load_params(repo_root / "params.yaml", "paper")
    cfg.update(run_root=str(tmp_path / "runs"), degradation={"kind": "bicubic"},
               data=dict(cfg["data"], train_dir=str(tmp_path / "train"), val_dir=str(tmp_path / "val"),
                         eval_hr_size=16, eval_crops_per_image=1))
    image_folder(tmp_path / "train", [(40, 48), (24, 24), (8, 64)])
    image_folder(tmp_path / "val", [(32, 32)], seed=1, prefix="val")
    return cfg


def test_paper_training_images_stream_from_their_folder(repo_root, tmp_path):
    """The paper profile's training folder (DIV2K: 800 2K images) is neither copied nor held in memory:
    prepare_data writes an index, and the training stages decode one image per example (HF datasets)."""
    from yonos.config import run_dir
    from yonos.io import read_image
    from yonos.stages import prepare_data
    from yonos.stages._common import StreamedImages, load_folder
    from yonos.train import CropStream

    cfg = folder_cfg(repo_root, tmp_path)
    prepare_data.run(cfg)
    train = run_dir(cfg, "prepare_data", "train")
    assert not list(train.glob("*.png"))  # no copies
    images = load_folder(train)
    assert isinstance(images, StreamedImages) and len(images) == 3
    assert not [v for v in vars(images).values() if isinstance(v, torch.Tensor)]  # nothing decoded is kept
    assert images.sizes == [(40, 48), (24, 24), (8, 64)]
    files = sorted((tmp_path / "train").glob("*.png"))
    assert all(torch.equal(images[i], read_image(f)) for i, f in enumerate(files))
    in_memory = [read_image(f) for f in files]
    streamed, loaded = (CropStream(x, 16, 6, seed=0, stream="s") for x in (images, in_memory))
    assert all(torch.equal(streamed[i]["hr"], loaded[i]["hr"]) for i in range(6))  # the same examples


def test_paper_data_change_reaches_dvc(repo_root, tmp_path):
    """prepare_data's DVC dependency (scan_data/train.json) and its output (train/index.json) both
    change when an image of the training folder changes, so every paper stage downstream re-runs."""
    from yonos.config import run_dir
    from yonos.stages import prepare_data, scan_data

    cfg = folder_cfg(repo_root, tmp_path)

    def state():
        scan_data.run(cfg)
        prepare_data.run(cfg)
        return (run_dir(cfg, "scan_data", "train.json").read_text(),
                run_dir(cfg, "prepare_data", "train", "index.json").read_text())

    before = state()
    assert state() == before
    image_folder(tmp_path / "train", [(40, 48)], seed=5)  # img0.png replaced, same name and size
    after = state()
    assert after[0] != before[0] and after[1] != before[1]
