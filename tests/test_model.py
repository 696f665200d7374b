"""`trainer/model.py`: output shapes for vector and sequence inputs, and what masking does to the encoder's input.

The masked input is observed with a forward pre-hook on the first module that reads it (the vector encoder, or the
sequence branch's `embed_in`), and independently by the model's outputs: changing what lies under the mask must
change nothing. `random_mask`'s shapes, ratio and seeding are covered in `test_losses.py`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer import TrainConfig
from trainer.model import HSCMAE, random_mask

# embed, proj and cca sizes all differ, and so do the two modalities' dims and lengths, so a swapped head, a swapped
# modality or a decoder aimed at the wrong size shows up as a wrong shape
CFG = dict(hidden_dim=16, embed_dim=8, proj_dim=6, cca_dim=4, batch_size=16)
B, DA, DV, TA, TV = 5, 7, 9, 4, 3


def _cfg() -> TrainConfig:
    return TrainConfig.from_dict(CFG)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _model(audio_shape, visual_shape, seed: int = 0) -> HSCMAE:
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the global generator of other tests
        torch.manual_seed(seed)
        model = HSCMAE(audio_shape, visual_shape, _cfg()).double()
    with torch.no_grad():  # distinctive fill values (the init is 0, which a fill-with-zeros bug would also produce)
        for branch in (model.audio, model.visual):
            branch.mask_value.copy_(100.0 + torch.arange(branch.mask_value.numel(), dtype=torch.float64))
    return model


def _inputs(seq: bool, seed: int = 1):
    g = _gen(seed)
    shape_a, shape_v = ((B, TA, DA), (B, TV, DV)) if seq else ((B, DA), (B, DV))
    return tuple(torch.randn(shape, generator=g, dtype=torch.float64) for shape in (shape_a, shape_v))


def _capture_input(module: torch.nn.Module) -> tuple[list, torch.utils.hooks.RemovableHandle]:
    seen: list[torch.Tensor] = []
    handle = module.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    return seen, handle


@pytest.mark.parametrize("seq", [False, True], ids=["vector", "sequence"])
@pytest.mark.parametrize("decode", [False, True])
def test_forward_shapes(seq, decode):
    """e (B, embed_dim), z (B, proj_dim), h (B, cca_dim), recon shaped like the input, or None without decode.

    Catches: z and h heads swapped or sized by the wrong field, the visual branch built with the audio dims,
    a decoder that outputs the embedding size or pools away the time axis, recon computed when decode=False.
    """
    xa, xv = _inputs(seq)
    model = _model(xa.shape[1:], xv.shape[1:])
    assert model.audio.seq == seq and model.visual.seq == seq
    oa, ov = model(xa, xv, decode=decode)
    for out, x in ((oa, xa), (ov, xv)):
        assert out.e.shape == (B, CFG["embed_dim"])
        assert out.z.shape == (B, CFG["proj_dim"])
        assert out.h.shape == (B, CFG["cca_dim"])
        if decode:
            assert out.recon is not None and out.recon.shape == x.shape
        else:
            assert out.recon is None
        for t in (out.e, out.z, out.h) + ((out.recon,) if decode else ()):
            assert torch.isfinite(t).all()
    # the masked call has the same shapes (the mask does not change the layout)
    ma, mv = random_mask(xa, 0.5, _gen(2)), random_mask(xv, 0.5, _gen(3))
    assert ma.shape == ((B, TA) if seq else (B, DA)) and mv.shape == ((B, TV) if seq else (B, DV))
    ma2, mv2 = model(xa, xv, ma, mv, decode=decode)
    assert ma2.e.shape == oa.e.shape and mv2.z.shape == ov.z.shape
    assert (ma2.recon is None) == (not decode)


def test_vector_masking_fills_masked_entries_with_the_learned_per_dimension_value():
    """The encoder reads x where the mask is False and mask_value[d] where entry (i, d) is masked.

    Compared element by element with numpy `where(mask, mask_value[None, :], x)`. Catches: a fill with zeros (the
    fill values here are 100 + d, not the zero init), a mask_value indexed per clip instead of per dimension, an
    inverted mask, masking whole rows or columns instead of entries, the audio mask applied to the visual branch.
    """
    xa, xv = _inputs(seq=False)
    model = _model(xa.shape[1:], xv.shape[1:])
    ma, mv = random_mask(xa, 0.4, _gen(5)), random_mask(xv, 0.6, _gen(6))
    assert ma.any() and (~ma).any() and mv.any() and (~mv).any()
    seen_a, ha = _capture_input(model.audio.encoder)
    seen_v, hv = _capture_input(model.visual.encoder)
    try:
        model(xa, xv, ma, mv)
        model(xa, xv)  # no mask: the encoder reads x itself
    finally:
        ha.remove()
        hv.remove()
    for seen, x, m, fill in ((seen_a, xa, ma, model.audio.mask_value), (seen_v, xv, mv, model.visual.mask_value)):
        expected = np.where(m.numpy(), fill.detach().numpy()[None, :], x.numpy())
        np.testing.assert_array_equal(seen[0].numpy(), expected)
        np.testing.assert_array_equal(seen[1].numpy(), x.numpy())


def test_sequence_masking_replaces_whole_time_steps():
    """For (B, T, D) inputs a (B, T) mask replaces every feature of a masked step by the mask vector; other steps
    are passed through unchanged.

    Catches: a (B, T) mask broadcast along the feature axis instead of the time axis (masking feature columns),
    masking only some features of a step, a zero fill instead of the learned vector.
    """
    xa, xv = _inputs(seq=True)
    model = _model(xa.shape[1:], xv.shape[1:])
    ma, mv = random_mask(xa, 0.5, _gen(7)), random_mask(xv, 0.5, _gen(8))
    assert ma.shape == (B, TA) and mv.shape == (B, TV)
    assert ma.any() and (~ma).any() and mv.any() and (~mv).any()
    seen_a, ha = _capture_input(model.audio.embed_in)
    seen_v, hv = _capture_input(model.visual.embed_in)
    try:
        model(xa, xv, ma, mv, decode=True)
    finally:
        ha.remove()
        hv.remove()
    for seen, x, m, fill in ((seen_a, xa, ma, model.audio.mask_value), (seen_v, xv, mv, model.visual.mask_value)):
        got, x, m, fill = seen[0].numpy(), x.numpy(), m.numpy(), fill.detach().numpy()
        b_idx, t_idx = np.nonzero(m)
        np.testing.assert_array_equal(got[b_idx, t_idx], np.broadcast_to(fill, (len(b_idx), fill.size)))
        b_idx, t_idx = np.nonzero(~m)
        np.testing.assert_array_equal(got[b_idx, t_idx], x[b_idx, t_idx])


@pytest.mark.parametrize("seq", [False, True], ids=["vector", "sequence"])
def test_masked_content_does_not_reach_the_outputs(seq):
    """Whatever lies under the mask, e, z, h and recon are the same; changing an unmasked entry changes them.

    Checks masking through the outputs rather than a hook. Catches: an additive mask token (x + mask_value),
    a mask applied after the encoder's first layer, a mask that is ignored.
    """
    xa, xv = _inputs(seq)
    model = _model(xa.shape[1:], xv.shape[1:])
    ma, mv = random_mask(xa, 0.5, _gen(9)), random_mask(xv, 0.5, _gen(10))
    noise_a, noise_v = _inputs(seq, seed=11)
    mask_a = ma.unsqueeze(-1) if seq else ma
    mask_v = mv.unsqueeze(-1) if seq else mv
    xa2, xv2 = torch.where(mask_a, 50 * noise_a, xa), torch.where(mask_v, 50 * noise_v, xv)
    assert not torch.equal(xa2, xa) and not torch.equal(xv2, xv)
    with torch.no_grad():
        ref = model(xa, xv, ma, mv, decode=True)
        same = model(xa2, xv2, ma, mv, decode=True)
        xa3 = torch.where(mask_a, xa, xa + 1.0)  # change only unmasked entries
        moved = model(xa3, xv, ma, mv, decode=True)
    for r, s in zip(ref, same):
        for key in ("e", "z", "h", "recon"):
            torch.testing.assert_close(getattr(s, key), getattr(r, key), rtol=1e-12, atol=1e-12)
    assert not torch.allclose(moved[0].e, ref[0].e)


@pytest.mark.parametrize("seq", [False, True], ids=["vector", "sequence"])
def test_mask_value_is_learned_and_an_empty_mask_is_no_mask(seq):
    """mask_value gets a gradient exactly on the dimensions masked somewhere in the batch (it is a trained
    parameter, per dimension), and an all-False mask gives the outputs of no mask.

    Catches: a detached or buffer fill value (never trained), a fill value shared by all dimensions (a scalar would
    get gradient everywhere or nowhere), masking that touches entries whose mask is False.
    """
    xa, xv = _inputs(seq)
    model = _model(xa.shape[1:], xv.shape[1:])
    assert isinstance(model.audio.mask_value, torch.nn.Parameter) and model.audio.mask_value.shape == (DA,)
    assert isinstance(model.visual.mask_value, torch.nn.Parameter) and model.visual.mask_value.shape == (DV,)
    if seq:  # a masked step fills every dimension: mask one step of one clip in audio, none in visual
        ma = torch.zeros(B, TA, dtype=torch.bool)
        ma[1, 2] = True
        dims_a = np.ones(DA, bool)
    else:  # mask a few chosen columns only
        ma = torch.zeros(B, DA, dtype=torch.bool)
        ma[0, 1] = ma[3, 1] = ma[2, 4] = True
        dims_a = np.isin(np.arange(DA), [1, 4])
    mv = torch.zeros(xv.shape[:2], dtype=torch.bool)
    oa, ov = model(xa, xv, ma, mv, decode=True)
    (oa.e.sum() + oa.recon.square().sum() + ov.e.sum()).backward()
    grad_a = model.audio.mask_value.grad
    assert grad_a is not None
    np.testing.assert_array_equal(grad_a.numpy() != 0, dims_a)
    assert model.visual.mask_value.grad is None or not model.visual.mask_value.grad.any()
    with torch.no_grad():
        empty = model(xa, xv, torch.zeros_like(ma), mv, decode=True)
        plain = model(xa, xv, decode=True)
    for r, s in zip(plain, empty):
        for key in ("e", "z", "h", "recon"):
            torch.testing.assert_close(getattr(s, key), getattr(r, key), rtol=0, atol=0)
