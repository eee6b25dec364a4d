"""Short fine-tune with fixed masks: next-token loss on calibration windows, AdamW on the pruned
linears only (norms and embeddings frozen), pruned weights held at zero after every step.

:func:`finetune_dense` is its control: the same training of the same linears on a dense model
(every mask all ones), so that a pruned model's fine-tune gain can be reported net of what the
training text alone gives (domain adaptation)."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm


def finetune(model, masks: dict[str, np.ndarray], windows: np.ndarray, steps: int,
             lr: float = 1e-5, batch_size: int = 2, seed: int = 0,
             progress: bool = True) -> list[float]:
    """Train the masked linears for ``steps`` steps; returns the loss of each step.

    ``masks`` maps module name -> bool keep mask (bulk | salient); training runs in fp32 on a
    fp32 model only (a fp16 model is refused: its optimizer state would not fit the plan).
    """
    if steps < 0:
        raise ValueError(f"--finetune-steps must be >= 0, got {steps}")
    if steps == 0:
        return []
    if next(model.parameters()).dtype != torch.float32:
        raise ValueError("fine-tuning needs a fp32 model (this one is "
                         f"{next(model.parameters()).dtype})")
    for param in model.parameters():
        param.requires_grad_(False)
    keep = {}
    for name, mask in masks.items():
        weight = model.get_submodule(name).weight
        weight.requires_grad_(True)
        keep[weight] = torch.from_numpy(mask)
    optimizer = torch.optim.AdamW(list(keep), lr=lr, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    losses = []
    model.train()
    try:
        for _ in tqdm(range(steps), desc="finetune", unit="step", disable=not progress):
            ids = torch.from_numpy(windows[rng.choice(len(windows), batch_size, replace=False)
                                           if len(windows) >= batch_size else
                                           rng.integers(0, len(windows), batch_size)])
            loss = model(ids, labels=ids, use_cache=False).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                for weight, mask in keep.items():
                    weight.mul_(mask)
            losses.append(float(loss.detach()))
    finally:
        model.eval()
        for param in model.parameters():
            param.requires_grad_(False)
    return losses


def decoder_linears(model) -> dict[str, torch.nn.Linear]:
    """Every linear of the decoder layers by module name (what pruning and fine-tuning touch)."""
    return {f"model.layers.{name}": module for name, module in model.model.layers.named_modules()
            if isinstance(module, torch.nn.Linear)}


def finetune_dense(model, windows: np.ndarray, steps: int, **kwargs) -> list[float]:
    """The dense control: :func:`finetune` with nothing masked (same linears, steps, data, LR)."""
    masks = {name: np.ones(tuple(linear.weight.shape), bool)
             for name, linear in decoder_linears(model).items()}
    return finetune(model, masks, windows, steps, **kwargs)
