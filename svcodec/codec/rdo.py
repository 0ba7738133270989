"""The encoder's rate-distortion cost: one number to compare codings of the same frame pair by
(which motion to send, whether refined latents beat the analysis transform's own, whether a
frame costs less as an I-frame: a scene cut)."""

from __future__ import annotations

import torch

from ..nn.layers import rd_lambda


def visible_mse(x_hat: torch.Tensor, x: torch.Tensor, visible: tuple[int, int] | None = None) -> torch.Tensor:
    """MSE over the pixels the decoder outputs: the padding up to a multiple of 64 is cropped
    away, so what the codec does there does not count."""
    if visible is not None:
        x_hat, x = x_hat[..., :visible[0], :visible[1]], x[..., :visible[0], :visible[1]]
    return ((x_hat.clamp(0, 1) - x) ** 2).mean()


def rd_loss(mse, bits, rate: float, x: torch.Tensor, visible: tuple[int, int] | None = None):
    """lambda * mse + bits per visible pixel of the stereo pair x (2, 3, H, W), both views
    averaged: the trade the training loss makes at this rate. Floats for decisions (rd_cost),
    tensors for refinement, which descends this very function."""
    h, w = visible or x.shape[-2:]
    return rd_lambda(rate) * mse + bits / (x.shape[0] * h * w)


def rd_cost(x: torch.Tensor, res, rate: float, visible: tuple[int, int] | None = None) -> float:
    """rd_loss of one coded stereo frame pair (`res` has .substreams and .x_hat), with the real
    coded bits. visible = (height, width) of the picture inside the padded tensors."""
    bits = 8 * sum(len(s.data) for s in res.substreams)
    return rd_loss(float(visible_mse(res.x_hat, x, visible)), bits, rate, x, visible)
