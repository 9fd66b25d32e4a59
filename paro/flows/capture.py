"""``paro capture``: record the Q/K/V of a diffusers video transformer's attention, per denoising step and
layer, into the capture folder ``paro calibrate --captures`` reads (:mod:`paro.sw.captures`).

Needs the optional extra ``capture`` (torch and diffusers; ``make install-capture``). Supported:
``diffusers.CogVideoXTransformer3DModel`` (its blocks' ``attn1`` with ``CogVideoXAttnProcessor2_0``).

How: each block's attention processor is wrapped; while the wrapped processor runs, the call of
``torch.nn.functional.scaled_dot_product_attention`` it makes is intercepted and its ``query``, ``key`` and
``value`` (after the QK norms and the rotary embedding, exactly what attention sees) are kept for batch
element ``sample`` (0: the first, e.g. the conditional half under classifier-free guidance). Every forward
call of the transformer is one denoising step. Tokens are CogVideoX's order: the text tokens, then the
video patches frame-major (frame, patch row, patch column), which is the layout calibrate expects.

Two ways to use it:

* Python, around your own pipeline run (real latents and prompts)::

      with AttentionCapture(pipe.transformer, "captures/", steps=range(0, 50, 5), layers=[0, 10, 20]):
          pipe(prompt="...", num_inference_steps=50)

* ``paro capture --transformer DIR`` (a ``save_pretrained`` folder, e.g. your checkpoint's
  ``transformer`` subfolder) or ``--config JSON`` (a randomly initialised model of that config): runs the
  transformer on random latents and text embeddings for ``--num-steps`` steps. Random inputs give the
  model's positional attention structure, not a prompt's; for real captures use the Python form.
"""

import io
import json
import math
from pathlib import Path

import numpy as np

from paro.errors import ParoError
from paro.files import atomic_write, atomic_write_bytes

from ..sw.captures import capture_name

__all__ = ["AttentionCapture", "capture_random_inputs", "load_transformer", "INSTALL_HINT"]

INSTALL_HINT = "paro capture needs torch and diffusers: run `make install-capture` (or pip install 'paro[capture]')"


def _modules():
    """``(torch, CogVideoXTransformer3DModel)``, or the one-line install hint."""
    try:
        import torch
        from diffusers import CogVideoXTransformer3DModel
    except ImportError:
        raise ParoError(INSTALL_HINT) from None
    return torch, CogVideoXTransformer3DModel


class _Processor:
    """The block's own processor, marking the calls that belong to ``layer`` (CogVideoX's signature, which
    diffusers inspects to route keyword arguments)."""

    def __init__(self, inner, layer, capture):
        self.inner, self.layer, self.capture = inner, layer, capture

    def __call__(self, attn, hidden_states, encoder_hidden_states, attention_mask=None, image_rotary_emb=None):
        self.capture.layer = self.layer
        try:
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask=attention_mask,
                              image_rotary_emb=image_rotary_emb)
        finally:
            self.capture.layer = None


class AttentionCapture:
    """Context manager that writes ``step<S>_layer<L>.npz`` (``q``, ``k``, ``v``: float32 (heads, tokens,
    head_dim)) for the chosen ``steps`` (default all) and ``layers`` (default all) into ``folder``, and a
    ``capture.json`` with the token counts. See the module docstring."""

    def __init__(self, transformer, folder, steps=None, layers=None, sample=0):
        torch, _ = _modules()
        blocks = getattr(transformer, "transformer_blocks", None)
        if blocks is None or not all(hasattr(b, "attn1") for b in blocks):
            raise ParoError(f"{type(transformer).__name__} is not a CogVideoX-style transformer (no "
                            f"transformer_blocks[i].attn1); paro capture supports CogVideoXTransformer3DModel")
        count = len(blocks)
        self.layers = list(range(count)) if layers is None else sorted(set(layers))
        if not self.layers or min(self.layers) < 0 or max(self.layers) >= count:
            raise ParoError(f"--layers must be in [0, {count - 1}] for this model's {count} layers, got {layers}")
        self.transformer, self.folder, self.sample, self.torch = transformer, Path(folder), sample, torch
        self.steps = None if steps is None else set(steps)
        self.step, self.layer, self.written, self.tokens = -1, None, [], None

    def __enter__(self):
        self.folder.mkdir(parents=True, exist_ok=True)
        blocks = self.transformer.transformer_blocks
        self.originals = {n: blocks[n].attn1.processor for n in self.layers}
        for n in self.layers:
            blocks[n].attn1.processor = _Processor(self.originals[n], n, self)
        self.hook = self.transformer.register_forward_pre_hook(self._next_step)
        functional = self.torch.nn.functional
        self.sdpa = functional.scaled_dot_product_attention
        functional.scaled_dot_product_attention = self._attention
        return self

    def __exit__(self, *exc):
        self.torch.nn.functional.scaled_dot_product_attention = self.sdpa
        self.hook.remove()
        for n, processor in self.originals.items():
            self.transformer.transformer_blocks[n].attn1.processor = processor
        if self.written and exc[0] is None:
            atomic_write(self.folder / "capture.json", json.dumps({
                "model": type(self.transformer).__name__, "tokens": self.tokens, "sample": self.sample,
                "files": self.written}, indent=2) + "\n")
        return False

    def _next_step(self, module, args):
        self.step += 1

    def _attention(self, query, key, value, *args, **kwargs):
        if self.layer is not None and (self.steps is None or self.step in self.steps):
            q, k, v = (x[self.sample].detach().float().cpu().numpy() for x in (query, key, value))
            path = self.folder / capture_name(self.step, self.layer)
            buffer = io.BytesIO()
            np.savez(buffer, q=q, k=k, v=v)
            atomic_write_bytes(path, buffer.getvalue())
            self.written.append(path.name)
            self.tokens = int(q.shape[1])
        return self.sdpa(query, key, value, *args, **kwargs)


def load_transformer(transformer=None, config=None, seed=0):
    """A CogVideoX transformer from a ``save_pretrained`` folder, or randomly initialised from a config JSON."""
    torch, CogVideoXTransformer3DModel = _modules()
    if (transformer is None) == (config is None):
        raise ParoError("give --transformer DIR (a saved model) or --config JSON (a random model of that config)")
    if transformer is not None:
        if not Path(transformer).is_dir():
            raise ParoError(f"transformer folder {str(transformer)!r} does not exist")
        try:
            return CogVideoXTransformer3DModel.from_pretrained(transformer).eval()
        except (OSError, ValueError) as error:
            raise ParoError(f"cannot load a CogVideoXTransformer3DModel from {str(transformer)!r}: "
                            f"{str(error).splitlines()[0]}") from None
    try:
        values = json.loads(Path(config).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ParoError(f"transformer config {str(config)!r} is not readable JSON ({type(error).__name__})") from None
    torch.manual_seed(seed)
    try:
        return CogVideoXTransformer3DModel.from_config(values).eval()
    except (TypeError, ValueError) as error:
        raise ParoError(f"transformer config {str(config)!r} is invalid: {str(error).splitlines()[0]}") from None


def capture_random_inputs(model, folder, frames, height, width, text_tokens, num_steps, steps=None, layers=None,
                          seed=0):
    """Run ``model`` on random latents (``frames`` latent frames of ``height`` x ``width`` latent pixels) and
    random text embeddings for ``num_steps`` steps (timesteps from 999 down), capturing; returns the token
    grid ``(frames', height / patch, width / patch)`` and the files written."""
    torch, _ = _modules()
    cfg = model.config
    patch, patch_t = cfg.patch_size, cfg.patch_size_t or 1
    if height % patch or width % patch or frames % patch_t:
        raise ParoError(f"--height and --width must be multiples of the patch size {patch} (and --frames of "
                        f"{patch_t}), got {frames}x{height}x{width}")
    if cfg.use_rotary_positional_embeddings:
        raise ParoError("random-input capture does not build rotary embeddings (the pipeline does); capture this "
                        "model with AttentionCapture around your pipeline run (see paro.flows.capture)")
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(1, frames, cfg.in_channels, height, width, generator=generator)
    text = torch.randn(1, text_tokens, cfg.text_embed_dim, generator=generator)
    with AttentionCapture(model, folder, steps=steps, layers=layers) as capture, torch.no_grad():
        for n in range(num_steps):
            timestep = torch.tensor([int(round(999 * (1 - n / max(num_steps, 1))))])
            model(hidden_states=latents, encoder_hidden_states=text, timestep=timestep, return_dict=False)
    grid = (frames // patch_t, height // patch, width // patch)
    expected = text_tokens + math.prod(grid)
    if capture.tokens is not None and capture.tokens != expected:
        raise ParoError(f"captured {capture.tokens} tokens, expected {text_tokens} text + {math.prod(grid)} video")
    return grid, capture.written
