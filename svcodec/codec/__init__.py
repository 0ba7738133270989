"""The codec loop: I-frame coding (intra.py), P-frame coding (inter.py), the substream layout
(substreams.py), motion estimation (motion.py), the encoder's rate-distortion cost (rdo.py) and
latent refinement (refine.py), and the sequence encoder/decoder (session.py)."""

# Default intra period (svc encode --gop, svc bench). The P-frame model's quality drifts down
# along a GOP, on static footage too (about 0.1 dB per frame at rate 0 on hand-held footage), so a
# refresh every 16 frames costs less than it saves: rate 1, 32 frames, GOP 16 against 32 spent
# +20 % bits for +0.83 dB (stereopi_home 320x240), +10 % for +0.83 dB (vr180_street 480x540),
# +11 % for +0.27 dB (zed_office_realtime 672x376), +9 % for +0.62 dB at rate 0 on camcorder
# 480x272 (the RD slope there is about +0.5 dB per +37 % bits), +22 % for +1.0 dB on a static
# robot-camera scene (robot_static 640x480); see the commit that set it.
DEFAULT_GOP = 16

# What the encoder tries for each P-frame (--motion). "rd" codes the frame once with the DIS
# flow and once with no motion and keeps the cheaper in rate-distortion cost (a decision only
# the encoder makes: the stream carries the coded flow either way). Why: with DIS flow alone,
# motion took 32-42 % of the bits of GOP-16 streams on the dev clips while zero motion lost
# little quality; against DIS alone, BD-rate (PSNR, rates 0-3) camcorder -8.3 %, static indoor
# scene -19.9 %; on surgical footage it kept DIS for every P-frame (same stream).
MOTION_SEARCHES = {"rd": ("dis", "zero"), "dis": ("dis",), "zero": ("zero",)}
DEFAULT_MOTION = "rd"

# svc encode --refine N: N gradient steps on each frame's latents (codec/refine.py). 0, the
# default, keeps encoding fast; the limit only guards against typos that would run for days.
MAX_REFINE_STEPS = 1000

# Scene cuts (svc encode --scenecut, the default): a P-frame whose rate-distortion cost (rdo.rd_cost
# at the stream's rate) jumps above this multiple of the previous frame's is also coded as an
# I-frame, and where that costs less it starts a new GOP, as x264/x265 do at a cut. Why the cost
# and not the bits: across a cut the P-frame coder may spend few bits on a ruined picture (a
# 64x64 test clip: 180 B at 13.5 dB after 80 B at 28.5) as well as many (camcorder after an
# indoor scene: 9,740 B at 22.1 dB, and 22.4-22.7 dB for the rest of the GOP), and the cost
# jumps either way; along continuous footage it creeps up slowly and nothing is tried.
SCENECUT_COST_JUMP = 2.0
