"""Segmented gather matrix-vector multiplication (SGMV) for multi-LoRA serving."""
