"""Classic-protocol calibration: MATLAB bicubic on Set5/Set14, PSNR/SSIM on Y, border = scale.

Canonical bicubic values (SRCNN/VDSR tables). Tolerance 0.05 dB PSNR, 0.002 SSIM; measured residuals
are in docs/data.md. Skips when the shared dataset folder is absent ($YONOS_SHARED_DIR).
"""

import pytest

CANONICAL = {  # (set, scale): (PSNR dB, SSIM)
    ("set5", 2): (33.66, 0.9299), ("set5", 3): (30.39, 0.8682), ("set5", 4): (28.42, 0.8104),
    ("set14", 2): (30.24, 0.8688), ("set14", 3): (27.55, 0.7742), ("set14", 4): (26.00, 0.7027),
}


@pytest.fixture(scope="module")
def bicubic():
    from methods.bicubic import Bicubic

    return Bicubic()


# x4 is the acceptance check; x2/x3 (larger images, slower) run in the slow tier.
CASES = [pytest.param(n, s, marks=() if s == 4 else pytest.mark.slow) for n, s in sorted(CANONICAL)]


@pytest.mark.parametrize("name,scale", CASES)
def test_bicubic_matches_canonical(shared_dir, bicubic, name, scale):
    from yonos.commands.evaluate import evaluate
    from yonos.data.paired import load_hr_folder

    folder = shared_dir / "datasets" / "classic" / name
    if not folder.is_dir():
        pytest.skip(f"{folder} absent: set YONOS_SHARED_DIR to the folder holding datasets/classic/{name}")
    result = evaluate(bicubic, load_hr_folder(folder, scale=scale, name=name), scale=scale, protocol="classic")
    psnr, ssim = CANONICAL[(name, scale)]
    assert result["mean"]["psnr"] == pytest.approx(psnr, abs=0.05)
    assert result["mean"]["ssim"] == pytest.approx(ssim, abs=0.002)
    assert result["border"] == scale
