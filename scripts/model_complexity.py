"""Parameters and multiply-accumulates of the stereo P-frame model (and the intra model) on one
512x512 stereo pair, next to the paper's Table S4 (16.39 M parameters, 536.90 G "FLOPs" for the
full model on a 512x512 frame pair).

    python scripts/model_complexity.py [--json out.json]

Counts use torch.utils.flop_counter (convolutions and matrix products; element-wise operations
not counted); MACs = FLOPs / 2. The paper does not say whether its "FLOPs" are MACs (as the
usual profilers report them), so both are printed.
"""

from __future__ import annotations

import argparse
import json

import torch
from torch.utils.flop_counter import FlopCounterMode

from svcodec.nn.elic import PAPER as ELIC_PAPER, SMALL as ELIC_SMALL, ElicIntraCodec
from svcodec.nn.inter import PAPER, SMALL, StereoInterCodec, code_p_frame


class _Side:
    """Straight rounding, no entropy coding: the network cost of one P-frame."""

    def __init__(self, x, flow):
        self.x, self.flow = x, flow

    def latent(self, kind, fn):
        return fn()

    def hyper(self, kind, fn, eb, shape):
        return torch.round(fn())

    def prediction(self, pred):
        pass

    def slices(self, kind, y):

        class S:
            def slice(self, view, n, mu, scale):
                c = mu.shape[1]
                return torch.round(y[view:view + 1, n * c:(n + 1) * c] - mu) + mu
        return S()


@torch.no_grad()
def inter_cost(cfg) -> dict:
    model = StereoInterCodec(cfg).eval()
    x = torch.rand(2, 3, 512, 512)
    ref = model.reference_from_intra(torch.rand(2, 3, 512, 512))
    with FlopCounterMode(display=False) as fc:
        code_p_frame(model, ref, 1.0, _Side(x, torch.zeros(2, 2, 512, 512)))
    return {"parameters_M": sum(p.numel() for p in model.parameters()) / 1e6,
            "GMACs_per_stereo_pair": fc.get_total_flops() / 2e9}


@torch.no_grad()
def intra_cost(cfg) -> dict:
    model = ElicIntraCodec(cfg).eval()
    x = torch.rand(2, 3, 512, 512)
    with FlopCounterMode(display=False) as fc:
        model(x, torch.ones(2))
    return {"parameters_M": sum(p.numel() for p in model.parameters()) / 1e6,
            "GMACs_per_stereo_pair": fc.get_total_flops() / 2e9}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    rows = {
        "inter small (shipped)": inter_cost(SMALL),
        "inter paper-size": inter_cost(PAPER),
        "intra small (shipped)": intra_cost(ELIC_SMALL),
        "intra paper-size (ELIC)": intra_cost(ELIC_PAPER),
    }
    print("| model | parameters (M) | GMACs per 512x512 stereo pair |")
    print("|---|---|---|")
    for k, v in rows.items():
        print(f"| {k} | {v['parameters_M']:.2f} | {v['GMACs_per_stereo_pair']:.1f} |")
    print("| paper, Table S4 (full P-frame model) | 16.39 | 536.90 (reported as FLOPs) |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
