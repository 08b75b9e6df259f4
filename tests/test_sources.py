"""The registry pins what can be pinned (issue 7, item 7), from committed tables, and says why otherwise."""

import re
from pathlib import Path

import pytest

from yonos.data import sources
from yonos.data.sources import DATASETS, PINS_DIR, dataset_info

SHA = re.compile(r"^[0-9a-f]{64}$")


def test_div2k_archives_pinned_by_size_and_sha256():
    """Values published by TensorFlow Datasets for its DIV2K builder."""
    train, valid = dataset_info("div2k_train_hr").sources[0], dataset_info("div2k_valid_hr").sources[0]
    assert (train.size, train.sha256) == (
        3530603713, "9d0b9c463f6e35b6c62cc6a930ee2224f670b34c1df841a57670f9acf0f6c335")
    assert (valid.size, valid.sha256) == (
        448993893, "20dd31fd84d777bc1cf5d6b7654a3f569c0aec74458ae094122ad1d0489900fc")


@pytest.mark.parametrize("name", ["realsr", "drealsr", "div2k_val_stablesr"])
def test_stablesr_test_sets_pinned_to_the_released_archive(name):
    src = dataset_info(name).sources[0]
    assert (src.kind, src.location, src.filename) == ("hf", "Iceclear/StableSR-TestSets", "StableSR_testsets.zip")
    assert (src.size, src.sha256) == (3055396861, "32a6344e2a0d394ffcaa7a9245df14105c590dab3ef0d3540e940add1ef9b803")


def test_baseline_weights_pinned():
    pins = {(name, p.path): (p.size, p.sha256) for name in ("ldm_sr_x4", "stablesr", "stablesr_ldm_x4")
            for p in dataset_info(name).file_pins}
    assert pins[("ldm_sr_x4", "unet/diffusion_pytorch_model.bin")][1] == \
        "932989fbccc2aa77e143bb8e3f5db46b650c1a7bb0003b5d541d417e18c6f3b3"
    assert pins[("ldm_sr_x4", "vqvae/diffusion_pytorch_model.bin")][1] == \
        "c58407fc41070ccb9ab63f4ddfb1d13a3e607881033541e41232e41c66b877c9"
    assert pins[("stablesr", "stablesr_000117.ckpt")] == \
        (6481647231, "b8862bf3fd11c5b8fe82fb8a4618a1c74a29e0301a190bd6c2e84d68986ef9cb")
    assert pins[("stablesr", "vqgan_cfw_00011.ckpt")] == \
        (959719471, "5b20ed9a80e9bdbf9e76ff1642a6a5428ca3427b08b779248a88bfbba2e74e8e")
    assert pins[("stablesr_ldm_x4", "ldmsr4x_finetune_119.ckpt")] == \
        (2039892291, "a4977665bc20d5976c6cfafbb914aca162578f4012252ef2df4839a718be12da")
    assert all(dataset_info(n).category == "weights" for n in ("ldm_sr_x4", "stablesr", "stablesr_ldm_x4"))


@pytest.mark.parametrize("name,count,subs", [("train291", 291, {"t91": 91, "bsd200": 200}), ("b100", 100, {"hr": 100})])
def test_train291_and_b100_pinned_file_by_file(name, count, subs):
    info = dataset_info(name)
    pins = info.file_pins
    assert len(pins) == count and len({p.path for p in pins}) == count
    assert {s: sum(p.path.startswith(s + "/") for p in pins) for s in subs} == subs
    commit = "d382bc30d41c94ac72f8cb148d61cc4864b3b380"  # a fixed commit, never a branch
    assert all(SHA.match(p.sha256) and p.size > 0 and f"/{commit}/" in p.url for p in pins)
    assert info.sources[0].pinned


def test_every_entry_is_pinned_or_says_why(capsys):
    from yonos.commands.download import list_registry

    for info in DATASETS.values():
        src = info.sources[0]
        assert src.pinned or src.unpinned_reason, f"{info.name}: neither pinned nor a reason"
        if src.sha256:
            assert SHA.match(src.sha256) and src.size, info.name
    list_registry()
    out = capsys.readouterr().out
    for info in DATASETS.values():
        block = out.split(info.name, 1)[1].split("\n")[2]  # third line of the entry: the pin
        assert block.strip().startswith(("pinned:", "UNPINNED: ", "PARTLY PINNED: ", "not downloadable: ")), block
        if not info.sources[0].pinned:
            assert info.sources[0].unpinned_reason in block


def test_pin_tables_are_committed_copies(shared_dir):
    """Library code reads only yonos/data/pins/; its tables equal the published ones in shared/pins."""
    for lib in Path(sources.__file__).parent.parent.rglob("*.py"):
        assert "shared/pins" not in lib.read_text() and "/work/" not in lib.read_text(), lib
    if not (shared_dir / "pins").is_dir():
        pytest.skip(f"{shared_dir}/pins absent (set YONOS_SHARED_DIR)")
    for name in ("div2k.tsv", "train291_b100.tsv"):
        assert (PINS_DIR / name).read_bytes() == (shared_dir / "pins" / name).read_bytes(), name


def test_baseline_pins_match_the_baselines_notes(shared_dir):
    notes = shared_dir / "BASELINES.md"
    if not notes.is_file():
        pytest.skip(f"{notes} absent (set YONOS_SHARED_DIR)")
    text = notes.read_text().replace(",", "")
    for info in DATASETS.values():
        for pin in info.file_pins if info.sources[0].kind == "hf" else ():
            if pin.sha256:
                assert pin.sha256 in text, (info.name, pin.path)
            if pin.size and pin.size > 10_000:
                assert str(pin.size) in text, (info.name, pin.path)
    src = dataset_info("realsr").sources[0]
    assert src.sha256 in text and str(src.size) in text
