"""Runtimes: one Runner per backend (torch, ort, trt) behind the protocol in base.py."""
