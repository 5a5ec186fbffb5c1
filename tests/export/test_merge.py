"""Merged and folded params compute what the trained PEFT model computes."""

import flax
import jax
import numpy as np
import pytest
from export_setup import CONFIG, encode, images, sam_params

from mopeft_jax.export import fold_prefix, merge_lora, prepare_for_export
from mopeft_jax.peft import preset


def embeddings(config, params):
    return encode(config)(params, images())


def paths(params):
    return ["/".join(p) for p in flax.traverse_util.flatten_dict(params)]


def count(params):
    return sum(x.size for x in jax.tree_util.tree_leaves(params))


def test_merged_lora_is_a_plain_sam_with_the_same_outputs():
    config = CONFIG.replace(peft=preset("lora"))
    params = sam_params(config)
    merged_config, merged = merge_lora(config, params)
    assert merged_config == CONFIG
    assert jax.tree_util.tree_structure(merged) == jax.tree_util.tree_structure(sam_params())
    np.testing.assert_allclose(
        embeddings(merged_config, merged), embeddings(config, params), rtol=0, atol=2e-5
    )


def test_merge_keeps_other_peft_layers():
    config = CONFIG.replace(peft=preset("lora", adapter=True))
    params = sam_params(config)
    merged_config, merged = merge_lora(config, params)
    assert merged_config.peft == preset("adapter")
    assert any("adapter" in p for p in paths(merged))
    assert not any("lora" in p for p in paths(merged))
    np.testing.assert_allclose(
        embeddings(merged_config, merged), embeddings(config, params), rtol=0, atol=2e-5
    )


def test_gated_lora_cannot_be_merged():
    config = CONFIG.replace(peft=preset("mopeft"))
    params = sam_params(config)
    with pytest.raises(ValueError, match="Gated LoRA cannot be merged"):
        merge_lora(config, params)


def test_folded_prefix_gives_the_same_outputs_with_fewer_params():
    config = CONFIG.replace(peft=preset("mopeft"))
    params = sam_params(config)
    folded_config, folded = fold_prefix(config, params)
    assert not folded_config.peft.prefix_reparam
    depth, length, width = CONFIG.encoder_depth, 10, CONFIG.encoder_embed_dim
    assert folded["image_encoder"]["prefix"]["prefix"].shape == (depth, 2, length, width)
    assert count(folded) < count(params)
    np.testing.assert_allclose(
        embeddings(folded_config, folded), embeddings(config, params), rtol=0, atol=2e-5
    )


def test_prepare_merges_ungated_lora_and_folds_the_prefix():
    config = CONFIG.replace(peft=preset("lora", prefix=True))
    params = sam_params(config)
    prepared_config, prepared = prepare_for_export(config, params)
    assert prepared_config.peft == preset("prefix", prefix_reparam=False)
    assert [p for p in paths(prepared) if "lora" in p or "prefix" in p] == [
        "image_encoder/prefix/prefix"
    ]


def test_prepare_keeps_a_gated_mixture_but_folds_its_prefix():
    config = CONFIG.replace(peft=preset("mopeft"))
    params = sam_params(config)
    prepared_config, prepared = prepare_for_export(config, params)
    assert prepared_config.peft == preset("mopeft", prefix_reparam=False)
    expected = [p for p in paths(params) if "/prefix/" not in p] + ["image_encoder/prefix/prefix"]
    assert sorted(paths(prepared)) == sorted(expected)


def test_prepare_leaves_plain_sam_as_it_is():
    params = {"image_encoder": {"pos_embed": np.zeros(3)}}
    prepared_config, prepared = prepare_for_export(CONFIG, params)
    assert prepared_config is CONFIG and prepared is params
