"""HDC building blocks (svcodec/nn/hdc.py): Eq. 1 shifts exactly, shapes, gradients."""

import torch

from svcodec.nn.hdc import CrossViewAligner, HdcFer, HybridDisparityCompensation, attention_score, shift_volume


def test_shift_volume_matches_eq1():
    x = torch.arange(2 * 3 * 4 * 7, dtype=torch.float32).view(2, 3, 4, 7)
    for sign in (1, -1):
        v = shift_volume(x, 4, sign)
        assert v.shape == (2, 3, 4, 4, 7)
        for d in range(4):
            for w in range(7):
                src = w + sign * d
                expect = x[..., src] if 0 <= src < 7 else torch.zeros_like(x[..., 0])
                assert torch.equal(v[:, :, d, :, w], expect)


def test_attention_score_range_and_order():
    s = attention_score(torch.tensor([-20.0, -1.0, 0.0, 1.0, 20.0]))
    assert s[0] < 1e-6 and abs(s[-1] - 1) < 1e-6
    assert torch.all(s[1:] > s[:-1])


def test_hdc_aligns_a_shifted_view():
    # right view = left view shifted by 2 px: the left reference must depend on the right view
    torch.manual_seed(0)
    hdc = HybridDisparityCompensation(4, 4)
    left = torch.randn(1, 4, 6, 16)
    right = torch.roll(left, -2, dims=-1)
    ref_l, ref_r = hdc(left, right)
    assert ref_l.shape == left.shape and ref_r.shape == right.shape
    ref_l2, _ = hdc(left, torch.zeros_like(right))
    assert not torch.allclose(ref_l, ref_l2)


def test_fer_and_aligner_shapes_and_gradients():
    torch.manual_seed(0)
    fer = HdcFer(8, max_disp=3)
    kl, kr = torch.randn(2, 8, 9, 13, requires_grad=True), torch.randn(2, 8, 9, 13)
    ol, orr = fer(kl, kr)
    assert ol.shape == kl.shape and orr.shape == kr.shape
    (ol.sum() + orr.sum()).backward()
    assert kl.grad is not None and torch.isfinite(kl.grad).all()
    al = CrossViewAligner(anchor_ch=6, other_ch=5, channels=4, max_disp=3)
    out = al(torch.randn(1, 6, 5, 7), torch.randn(1, 5, 5, 7), current_is_left=False)
    assert out.shape == (1, 4, 5, 7)
