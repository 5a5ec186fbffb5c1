"""Every parameter a PEFT layer adds is recognised by name as PEFT or gate, and no SAM weight is.

Training labels parameters by these predicates, so a PEFT layer whose name they missed would
silently stay frozen at its (often zero) init.
"""

import flax
import jax
import pytest

from mopeft_jax import Sam, SamConfig
from mopeft_jax.peft import names, preset

CONFIG = SamConfig(
    encoder_embed_dim=32,
    encoder_depth=2,
    encoder_num_heads=2,
    encoder_global_attn_indexes=(1,),
    image_size=64,
    window_size=3,
    prompt_embed_dim=16,
    decoder_mlp_dim=32,
    iou_head_hidden_dim=16,
)


def paths(config):
    shapes = jax.eval_shape(Sam(config).init_params, jax.random.key(0))
    return set(flax.traverse_util.flatten_dict(shapes))


@pytest.mark.parametrize(
    "peft",
    [
        preset("mopeft_plus"),
        preset("mopeft_plus", gate_type="softmax"),
        preset("mopeft_plus", separate_prefix_gates=True, prefix_reparam=False),
        preset("lora"),
        preset("adapter"),
    ],
)
def test_added_parameters_are_peft_or_gates_and_sam_weights_are_neither(peft):
    sam = paths(CONFIG)
    added = paths(CONFIG.replace(peft=peft)) - sam
    assert added
    for path in added:
        assert names.is_peft(path) != names.is_gate(path), path
        assert names.is_gate(path) == any(
            part.startswith(names.GATE_PREFIX) or part == names.ROUTER for part in path
        )
    for path in sam:
        assert not names.is_peft(path) and not names.is_gate(path), path
    gated = {path[2] for path in added if names.is_gate(path) and path[1] == "blocks_0"}
    if peft.gated and peft.gate_type == "sigmoid":
        expected = {"lora_q", "lora_v", "adapter"}
        expected |= set(names.PREFIX_KV) if peft.separate_prefix_gates else {names.PREFIX}
        assert gated == {names.gate_name(n) for n in expected}


def test_lora_names_are_checked():
    assert names.LORA_LAYERS == ("lora_q", "lora_v")
    with pytest.raises(ValueError, match=r"LoRA targets are \('q', 'v'\), got 'k'"):
        names.lora_name("k")
