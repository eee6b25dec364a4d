"""Masks, salient-weight side-cars, corrections and pruning; `formats` is the N:M contract."""
