"""Encoder-side latent refinement (svc encode --refine): it must lower the real coded
rate-distortion cost, leave the format alone (streams decode exactly with the same decoder) and
refuse bad step counts."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from test_inter import moving_clip, tiny_set  # noqa: F401  (tiny_set is a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")
FPS = Fraction(25)


def test_visible_mse_ignores_the_padding():
    from svcodec.codec.rdo import visible_mse

    x = torch.rand(2, 3, 64, 64)
    x_hat = x.clone()
    x_hat[..., 40:, :] = 0  # only rows the decoder crops away differ
    assert float(visible_mse(x_hat, x, (40, 64))) == 0.0
    assert float(visible_mse(x_hat, x)) > 0.0


def test_refined_i_and_p_latents_code_for_a_lower_rd_cost(tiny_set):
    from svcodec.codec.inter import encode_inter_best
    from svcodec.codec.intra import encode_intra, encode_intra_refined
    from svcodec.codec.rdo import rd_cost
    from svcodec.codec.refine import refine_intra
    from svcodec.codec.session import to_tensor

    intra, inter = tiny_set.intra, tiny_set.inter
    lefts, rights = moving_clip(2)  # 40x72, padded to 64x128
    visible = (40, 72)
    x0, x1 = to_tensor(lefts[0], rights[0], "cpu"), to_tensor(lefts[1], rights[1], "cpu")
    plain = encode_intra(intra.model, intra.z_tables, x0, 2.0)
    refined = encode_intra(intra.model, intra.z_tables, x0, 2.0, latents=refine_intra(intra.model, x0, 2.0, 10, visible))
    assert rd_cost(x0, refined, 2.0, visible) < rd_cost(x0, plain, 2.0, visible)
    kept = encode_intra_refined(intra.model, intra.z_tables, x0, 2.0, 10, visible)
    assert [s.data for s in kept.substreams] == [s.data for s in refined.substreams]
    assert all(p.requires_grad for p in intra.model.parameters())  # refinement froze them only for a while

    ref = inter.model.reference_from_intra(plain.x_hat)
    flows = [torch.zeros(2, 2, 64, 128)]
    p_plain, _ = encode_inter_best(inter.model, inter.z_tables, x1, flows, ref, 1.0, 0, visible)
    p_refined, _ = encode_inter_best(inter.model, inter.z_tables, x1, flows, ref, 1.0, 10, visible)
    assert rd_cost(x1, p_refined, 1.0, visible) < rd_cost(x1, p_plain, 1.0, visible)


def test_refined_stream_decodes_exactly_and_bad_step_counts_are_refused(tmp_path, tiny_set):
    from svcodec.codec.api import decode_file, encode_frames
    from svcodec.errors import InputError

    lefts, rights = moving_clip(3)
    plain = encode_frames(lefts, rights, tmp_path / "plain.svc", rate=1.0, gop=3, fps=FPS, codec=tiny_set)
    refined = encode_frames(lefts, rights, tmp_path / "refined.svc", rate=1.0, gop=3, fps=FPS, codec=tiny_set,
                            refine=5)
    assert (tmp_path / "plain.svc").read_bytes() != (tmp_path / "refined.svc").read_bytes()
    dl, dr = decode_file(tmp_path / "refined.svc", codec=tiny_set)  # CRC-checked against the encoder's
    assert len(dl) == 3
    assert refined.psnr != plain.psnr or refined.bytes != plain.bytes
    for steps in (-1, 1001):
        with pytest.raises(InputError, match="--refine"):
            encode_frames(lefts, rights, tmp_path / "bad.svc", gop=3, fps=FPS, codec=tiny_set, refine=steps)
        assert not (tmp_path / "bad.svc").exists()
