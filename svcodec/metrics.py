"""Quality metrics computed on RGB, the space every codec in the benchmark is judged in.

They live below both the codec loop (per-frame PSNR in encode reports) and the benchmark, so
neither imports the other.

All functions take HxWx3 uint8 RGB arrays, so the neural codec and the classical anchors
go through exactly the same code.
"""

from __future__ import annotations

import math

import numpy as np

# Standard MS-SSIM weights (Wang et al. 2003), finest scale first.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
WIN_SIZE = 11
WIN_SIGMA = 1.5
# PSNR of identical images is infinite; cap it so means and JSON stay finite.
PSNR_MAX = 100.0


def psnr_rgb(ref: np.ndarray, test: np.ndarray) -> float:
    """PSNR (peak 255) over all pixels and all three channels of one image."""
    if ref.shape != test.shape:
        raise ValueError(f"shape mismatch {ref.shape} vs {test.shape}")
    mse = np.mean((ref.astype(np.float64) - test.astype(np.float64)) ** 2)
    if mse == 0:
        return PSNR_MAX
    return min(PSNR_MAX, 10.0 * math.log10(255.0**2 / mse))


def _gauss_window(size: int, sigma: float) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - size // 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _ssim_cs(x: np.ndarray, y: np.ndarray, win: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean SSIM and contrast-structure term of (C,H,W) float64 images.

    Same definition as pytorch_msssim (K1=0.01, K2=0.03, data range 255, 'valid' separable
    Gaussian filtering). scipy's filter is used, then the border is cropped so only fully
    covered positions remain ('valid'); it is ~10x faster than torch's grouped conv on CPU."""
    r = len(win) // 2

    def filt(t):
        from scipy.ndimage import correlate1d  # only MS-SSIM needs scipy

        t = correlate1d(correlate1d(t, win, axis=2), win, axis=1)
        return t[:, r : t.shape[1] - r, r : t.shape[2] - r]

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_x, mu_y = filt(x), filt(y)
    sxx = filt(x * x) - mu_x**2
    syy = filt(y * y) - mu_y**2
    sxy = filt(x * y) - mu_x * mu_y
    cs_map = (2 * sxy + c2) / (sxx + syy + c2)
    ssim_map = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1) * cs_map
    return ssim_map.mean(axis=(1, 2)), cs_map.mean(axis=(1, 2))


def _avg_pool2(t: np.ndarray) -> np.ndarray:
    """2x2 average pooling of (C,H,W); an odd side is zero-padded by one on both ends and the
    padding counted in the mean, exactly as torch's avg_pool2d(2, padding=side % 2) used by
    pytorch_msssim."""
    _, h, w = t.shape
    ph, pw = h % 2, w % 2
    if ph or pw:
        t = np.pad(t, ((0, 0), (ph, ph), (pw, pw)))
    h2, w2 = t.shape[1] // 2, t.shape[2] // 2
    t = t[:, : 2 * h2, : 2 * w2]
    return t.reshape(t.shape[0], h2, 2, w2, 2).mean(axis=(2, 4))


def ms_ssim_scales(h: int, w: int) -> int:
    """How many MS-SSIM scales fit: the coarsest scale must still be larger than the 11-tap window.

    5 scales need more than 160 px on the short side; smaller images (e.g. test clips) get fewer."""
    side = min(h, w)
    n = len(MS_SSIM_WEIGHTS)
    while n > 0 and side <= (WIN_SIZE - 1) * 2 ** (n - 1):
        n -= 1
    return n


def ms_ssim_rgb(ref: np.ndarray, test: np.ndarray) -> float:
    """RGB MS-SSIM of one image: 5 scales, 11x11 Gaussian (sigma 1.5), mean over the 3 channels.

    Computes what `pytorch_msssim.ms_ssim(data_range=255)` computes (float64 here); it is
    written out because that function refuses images below 161 px, where we drop the coarsest
    scales and renormalise their weights. NaN when even one scale does not fit."""
    if ref.shape != test.shape:
        raise ValueError(f"shape mismatch {ref.shape} vs {test.shape}")
    h, w = ref.shape[:2]
    levels = ms_ssim_scales(h, w)
    if levels == 0:
        return float("nan")
    weights = np.asarray(MS_SSIM_WEIGHTS[:levels]) / sum(MS_SSIM_WEIGHTS[:levels])
    x = ref.transpose(2, 0, 1).astype(np.float64)
    y = test.transpose(2, 0, 1).astype(np.float64)
    win = _gauss_window(WIN_SIZE, WIN_SIGMA)
    terms = []
    for i in range(levels):
        ssim, cs = _ssim_cs(x, y, win)
        if i < levels - 1:
            terms.append(np.maximum(cs, 0))
            x, y = _avg_pool2(x), _avg_pool2(y)
    terms.append(np.maximum(ssim, 0))
    per_channel = np.prod(np.stack(terms) ** weights[:, None], axis=0)
    return float(per_channel.mean())


def measure_stereo(
    src_left: list[np.ndarray],
    src_right: list[np.ndarray],
    dec_left: list[np.ndarray],
    dec_right: list[np.ndarray],
    msssim: bool = True,
) -> dict:
    """Mean RGB PSNR / MS-SSIM over frames and both views (per-view and per-frame PSNR kept too)."""
    if not (len(src_left) == len(src_right) == len(dec_left) == len(dec_right)):
        raise ValueError("frame count mismatch between source and decoded views")
    p_l = [psnr_rgb(a, b) for a, b in zip(src_left, dec_left)]
    p_r = [psnr_rgb(a, b) for a, b in zip(src_right, dec_right)]
    out = {
        # per frame, both views averaged: shows how quality moves across a GOP (P-frame drift)
        "psnr_per_frame": [round((a + b) / 2, 3) for a, b in zip(p_l, p_r)],
        "psnr_rgb": float(np.mean(p_l + p_r)),
        "psnr_rgb_L": float(np.mean(p_l)),
        "psnr_rgb_R": float(np.mean(p_r)),
        "msssim_rgb": float("nan"),
    }
    if msssim:
        vals = [ms_ssim_rgb(a, b) for a, b in zip(src_left + src_right, dec_left + dec_right)]
        out["msssim_rgb"] = float(np.mean(vals))
    return out
