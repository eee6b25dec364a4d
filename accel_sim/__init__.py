"""Cycle-approximate N:M sparse tensor-core simulator and area model."""
