"""HDC building blocks (svcodec/nn/hdc.py): geometry of the shifts, exact alignment of a known
disparity in both directions, the literal Eq. 1 defect it fixes, shapes and gradients."""

import pytest
import torch

from svcodec.nn.hdc import (
    VARIANTS, CrossViewAligner, HdcFer, HybridDisparityCompensation, attention_score, candidates,
    hdc_volume, shift_w, shifts_for,
)


def test_shift_w_moves_content_and_zero_fills():
    x = torch.arange(7, dtype=torch.float32).view(1, 1, 1, 7)
    assert shift_w(x, 2).flatten().tolist() == [2, 3, 4, 5, 6, 0, 0]
    assert shift_w(x, -3).flatten().tolist() == [0, 0, 0, 0, 1, 2, 3]
    assert torch.equal(shift_w(x, 0), x)
    assert not shift_w(x, 9).any()


def _stereo_features(disp: int, c: int = 32, h: int = 6, w: int = 40):
    """Left features and a right view that sees every scene point `disp` px further left."""
    torch.manual_seed(1)
    left = torch.randn(1, c, h, w)
    right = shift_w(left, disp)  # right(w) = left(w + disp)
    return left, right


@pytest.mark.parametrize("disp", [1, 2, 3, 5])
def test_aligned_hdc_recovers_and_aligns_a_known_disparity_both_directions(disp):
    left, right = _stereo_features(disp)
    shifts = shifts_for(8)
    inner = slice(8, -8)  # away from the zero-filled borders
    # left view compensated from the right view
    cand = candidates(right, shifts, for_left=True)
    sim = (left.unsqueeze(2) * cand).sum(1)  # channel-summed Eq. 2
    best = torch.tensor(shifts)[sim.argmax(1)]
    assert (best[..., inner] == disp).all()
    k = shifts.index(disp)
    assert torch.equal(cand[:, :, k, :, inner], left[..., inner])  # the selected slice is aligned
    # right view compensated from the left view
    cand = candidates(left, shifts, for_left=False)
    sim = (right.unsqueeze(2) * cand).sum(1)
    best = torch.tensor(shifts)[sim.argmax(1)]
    assert (best[..., inner] == disp).all()
    assert torch.equal(cand[:, :, k, :, inner], right[..., inner])


def test_negative_disparities_are_searched_too():
    left, right = _stereo_features(-2)  # swapped eyes / converged cameras
    shifts = shifts_for(8)
    cand = candidates(right, shifts, for_left=True)
    best = torch.tensor(shifts)[(left.unsqueeze(2) * cand).sum(1).argmax(1)]
    assert (best[..., 8:-8] == -2).all()


def test_literal_eq1_compares_pixels_twice_the_shift_apart():
    # The documented defect of Eq. 1 as printed: with a 2 px disparity the product peaks at d=1.
    left, right = _stereo_features(2)
    shifts = shifts_for(8, "literal")
    v_l = torch.stack([shift_w(left, d) for d in shifts], dim=2)
    v_r = torch.stack([shift_w(right, -d) for d in shifts], dim=2)
    best = torch.tensor(shifts)[(v_l * v_r).sum(1).argmax(1)]
    assert (best[..., 8:-8] == 1).all()


def test_attention_score_range_and_order():
    s = attention_score(torch.tensor([-20.0, -1.0, 0.0, 1.0, 20.0]))
    assert s[0] < 1e-6 and abs(s[-1] - 1) < 1e-6
    assert torch.all(s[1:] > s[:-1])


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_uses_the_other_view(variant):
    torch.manual_seed(0)
    hdc = HybridDisparityCompensation(4, 4, variant)
    left = torch.randn(1, 4, 6, 16)
    right = shift_w(left, 2)
    ref_l, ref_r = hdc(left, right)
    assert ref_l.shape == left.shape and ref_r.shape == right.shape
    ref_l2, _ = hdc(left, torch.randn_like(right))
    assert not torch.allclose(ref_l, ref_l2)
    vol = hdc_volume(left, right, right, hdc.shifts, True, variant)
    assert vol.shape[2] == len(hdc.shifts) == (1 if variant == "noshift" else 5)


def test_fer_starts_as_identity_and_trains():
    torch.manual_seed(0)
    fer = HdcFer(8, max_disp=3)
    k = torch.randn(4, 8, 9, 13, requires_grad=True)  # 2 left views then 2 right views
    out = fer(k)
    assert torch.equal(out, k)  # zero-initialised gate
    torch.nn.init.normal_(fer.gate.weight)
    out = fer(k)
    assert out.shape == k.shape and not torch.equal(out, k)
    out.sum().backward()
    assert k.grad is not None and torch.isfinite(k.grad).all()
    # left outputs depend on the right inputs
    k2 = k.detach().clone()
    k2[2:] = 0
    assert not torch.allclose(fer(k2)[:2], fer(k.detach())[:2])


def test_aligner_shapes():
    torch.manual_seed(0)
    al = CrossViewAligner(anchor_ch=6, other_ch=5, channels=4, max_disp=3)
    out = al(torch.randn(1, 6, 5, 7), torch.randn(1, 5, 5, 7), for_left=False)
    assert out.shape == (1, 4, 5, 7)


def test_factorized_prior_loads_compressai_layout_and_never_imports_compressai():
    import subprocess
    import sys

    code = ("import sys, svcodec.codec.session, svcodec.zoo as z; z.load_intra(); z.load_inter(); "
            "print('compressai' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
