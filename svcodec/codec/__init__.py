"""The codec loop: I-frame coding (intra.py) and the sequence encoder/decoder (session.py)."""
