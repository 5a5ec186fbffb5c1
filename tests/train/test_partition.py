"""Only gates and PEFT parameters train; counts per preset checked against hand counts."""

import flax
import jax
import numpy as np
import optax
import pytest
import torch
from segment_anything import build_sam_vit_b

from mopeft_jax import Sam, SamConfig
from mopeft_jax.peft import method, preset
from mopeft_jax.train import partition

VIT_B = SamConfig.vit_b()


def vit_b_counts():
    """Hand counts for ViT-B (C=768, 12 blocks) with the default PEFT sizes."""
    c, depth, r, length, hidden = 768, 12, 8, 10, 512
    lora = depth * 2 * (c * r + r * c)
    prefix = length * c + (c * hidden + hidden) + (hidden * depth * 2 * c + depth * 2 * c)
    adapter = depth * (c * (c // 16) + c // 16 + (c // 16) * c + c)
    expert = c * 16 + 16 + 16 * c + c
    gate = c + 1
    return dict(
        lora=lora,
        prefix=prefix,
        adapter=adapter,
        input_expert=expert,
        mopeft=lora + prefix + adapter + depth * 4 * gate,
        mopeft_plus=lora + prefix + adapter + expert + depth * 4 * gate + gate,
    )


def count(tree):
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


def abstract_params(config):
    return jax.eval_shape(Sam(config).init_params, jax.random.key(0))


def test_lora_rank_8_on_q_and_v_of_vit_b():
    assert vit_b_counts()["lora"] == 294_912


@pytest.mark.parametrize(
    "name", ["lora", "prefix", "adapter", "input_expert", "mopeft", "mopeft_plus"]
)
def test_trainable_counts_of_peft_presets_on_vit_b(name):
    params = abstract_params(VIT_B.replace(peft=preset(name)))
    trainable, frozen = partition.split(params, partition.label_params(params))
    assert count(trainable) == vit_b_counts()[name]
    assert count(frozen) == count(abstract_params(VIT_B))


def test_decoder_only_and_full_finetune_counts_equal_the_official_parameters():
    with torch.device("meta"):
        official = build_sam_vit_b()
    for name, expected in [
        ("decoder_only", sum(p.numel() for p in official.mask_decoder.parameters())),
        # The random-Fourier matrix is a buffer in the official model, never trained.
        ("full_finetune", sum(p.numel() for p in official.parameters())),
    ]:
        params = abstract_params(VIT_B.replace(peft=preset(name)))
        labels = partition.label_params(params, method(name).trainable)
        trainable, _ = partition.split(params, labels)
        assert count(trainable) == expected, name


def test_labels_by_path():
    params = abstract_params(
        SamConfig(
            encoder_embed_dim=32,
            encoder_depth=1,
            encoder_num_heads=1,
            image_size=64,
            encoder_global_attn_indexes=(0,),
            peft=preset("mopeft_plus"),
        )
    )
    labels = flax.traverse_util.flatten_dict(
        partition.label_params(params, "peft+decoder"), sep="/"
    )
    assert labels["image_encoder/blocks_0/lora_q/lora_a/kernel"] == "peft"
    assert labels["image_encoder/blocks_0/gate_adapter/dense/kernel"] == "gate"
    assert labels["image_encoder/prefix/mlp_1/kernel"] == "peft"
    assert labels["image_encoder/gate_input_expert/dense/bias"] == "gate"
    assert labels["mask_decoder/iou_token/embedding"] == "decoder"
    assert labels["image_encoder/blocks_0/attn/qkv/kernel"] == "frozen"
    assert labels["prompt_encoder/pe_layer/positional_encoding_gaussian_matrix"] == "frozen"


def test_frozen_parameters_have_no_optimizer_state():
    config = VIT_B.replace(peft=preset("mopeft"))
    params = abstract_params(config)
    labels = partition.label_params(params)
    trainable, _ = partition.split(params, labels)
    trainable_labels, _ = partition.split(labels, labels)
    optimizer = partition.make_optimizer(partition.OptimizerConfig(), trainable_labels)
    state = jax.eval_shape(optimizer.init, trainable)
    # AdamW keeps mu and nu per trainable parameter, plus scalar counters.
    big = [leaf for leaf in jax.tree_util.tree_leaves(state) if leaf.ndim > 0]
    assert count(big) == 2 * vit_b_counts()["mopeft"]


def test_missing_learning_rate_is_named():
    labels = {"a": "gate", "b": "peft"}
    config = partition.OptimizerConfig(learning_rates={"gate": 1e-3})
    with pytest.raises(ValueError, match=r"No learning rate for the trainable labels \['peft'\]"):
        partition.make_optimizer(config, labels)


def test_schedule_warms_up_then_decays():
    config = partition.OptimizerConfig(
        learning_rates={"peft": 1.0},
        weight_decay=0.0,
        warmup_steps=10,
        total_steps=110,
        end_fraction=0.0,
    )
    optimizer = partition.make_optimizer(config, {"w": "peft"})
    params = {"w": np.zeros(1, np.float32)}
    state = optimizer.init(params)
    steps = []
    for _ in range(110):
        # With a constant gradient Adam's step is the learning rate itself.
        updates, state = optimizer.update({"w": np.ones(1, np.float32)}, state, params)
        steps.append(-float(updates["w"][0]))
    assert steps[0] == 0.0 and abs(steps[5] - 0.5) < 1e-3 and abs(steps[10] - 1.0) < 1e-3
    assert abs(steps[60] - 0.5) < 1e-2 and steps[-1] < 1e-3
    assert isinstance(optimizer, optax.GradientTransformation)
