"""The gradients of the PEFT mixture against central finite differences, in float64.

For the gated `mopeft` and `mopeft_plus` presets on a tiny model, the directional derivative
from `jax.value_and_grad` of `train.step.loss_and_metrics` (the train step's loss) along a
few random unit directions in trainable-parameter space (all of it, the gates only, the
PEFT layers only) must match `(L(x + eps v) - L(x - eps v)) / (2 eps)` to a relative error
below `RTOL` (1e-10 to 1.4e-9 seen).

Isolation: float64 needs `jax_enable_x64`, which would change every later test in this
process, so the check runs in a subprocess (this file's `__main__`). That process also makes
the model compute in float64 throughout: `SamConfig.dtype` is set to "float64" (its
validation allows only training dtypes, hence `object.__setattr__`), attention uses the
"chunked" kernel (`jax.nn.dot_product_attention` always takes its softmax in float32), and
`jnp.float32` is aliased to float64 there because the model pins float32 for bf16 training
(attention softmax statistics, gate logits). A jaxpr check proves no float32 is left.

`LossConfig(multimask=False)`: SAM's loss otherwise picks the best of three outputs by an
argmin, a kink a perturbation could cross. The measured IoU (a step function of the logits)
is checked to be the same at both ends of every difference.
"""

import json
import os
import subprocess
import sys

import pytest

PRESETS = ("mopeft", "mopeft_plus")
RTOL = 1e-5
EPS = 1e-4  # along unit directions: float64 rounding ~1e-16 / EPS, truncation ~EPS**2
TIMEOUT_S = 300
SEED = 0


def _batch(config, rng, batch=2, prompts=2):
    """Random images and one rectangle (box and mask) per prompt, float64."""
    import numpy as np

    size, low = config.image_size, config.low_res_mask_size
    stride = size // low
    masks = np.zeros((batch, prompts, low, low))
    boxes = np.zeros((batch, prompts, 4))
    for b in range(batch):
        for p in range(prompts):
            y0, x0 = rng.integers(0, low // 2, 2)
            h, w = rng.integers(3, low // 2, 2)
            masks[b, p, y0 : y0 + h, x0 : x0 + w] = 1
            boxes[b, p] = [x0 * stride, y0 * stride, (x0 + w) * stride, (y0 + h) * stride]
    return dict(
        image=rng.standard_normal((batch, size, size, 3)),
        boxes=boxes,
        points=boxes[..., :2] + stride,
        masks=masks,
        valid=np.ones((batch, prompts), bool),
    )


def _check_preset(name, rng):
    """Directional derivatives, FD and analytic, and the facts the test asserts on."""
    import flax
    import jax
    import numpy as np
    from _sharding_common import random_params
    from jax.flatten_util import ravel_pytree

    from mopeft_jax import Sam, SamConfig
    from mopeft_jax.peft import preset
    from mopeft_jax.train import partition
    from mopeft_jax.train import step as step_lib

    config = SamConfig(
        encoder_embed_dim=32,
        encoder_depth=2,
        encoder_num_heads=2,
        encoder_global_attn_indexes=(1,),  # one windowed block (padded), one global
        image_size=64,
        window_size=3,
        prompt_embed_dim=16,
        mask_in_chans=4,
        decoder_depth=1,
        decoder_mlp_dim=32,
        decoder_num_heads=2,
        iou_head_hidden_dim=16,
        attention="chunked",
        peft=preset(name, prefix_hidden=32, prefix_length=4),
    )
    object.__setattr__(config, "dtype", "float64")
    model = Sam(config)
    # As device arrays: `frozen` is closed over below, and NumPy constants in a traced
    # function would be indexed by tracers (the encoder's relative-position lookup).
    params = jax.tree_util.tree_map(jax.numpy.asarray, random_params(model, rng, dtype=np.float64))
    labels = partition.label_params(params)
    trainable, frozen = partition.split(params, labels)
    batch = _batch(config, rng)
    loss_config = step_lib.LossConfig(multimask=False)

    def loss(trainable):
        return step_lib.loss_and_metrics(trainable, frozen, batch, model, loss_config)

    jaxpr = str(jax.make_jaxpr(loss)(trainable))
    value_and_grad = jax.jit(jax.value_and_grad(loss, has_aux=True))
    (value, metrics), grads = value_and_grad(trainable)

    x0, unravel = ravel_pytree(trainable)
    g = np.asarray(ravel_pytree(grads)[0])
    flat_labels = flax.traverse_util.flatten_dict(partition.split(labels, labels)[0])
    kinds = np.concatenate(
        [np.full(np.size(v), flat_labels[k]) for k, v in _leaves_with_paths(trainable)]
    )
    directions = {"all": np.ones(x0.size, bool), "gates": kinds == "gate", "peft": kinds == "peft"}
    results = []
    for direction, support in directions.items():
        v = np.where(support, rng.standard_normal(x0.size), 0.0)
        v /= np.linalg.norm(v)
        (plus, m_plus), _ = value_and_grad(unravel(x0 + EPS * v))
        (minus, m_minus), _ = value_and_grad(unravel(x0 - EPS * v))
        fd = (float(plus) - float(minus)) / (2 * EPS)
        analytic = float(g @ v)
        results.append(
            dict(
                direction=direction,
                analytic=analytic,
                fd=fd,
                rel_err=abs(fd - analytic) / max(abs(analytic), abs(fd), 1e-300),
                iou_stable=float(m_plus["iou"]) == float(m_minus["iou"]) == float(metrics["iou"]),
            )
        )
    gate_metrics = {k: float(v) for k, v in metrics.items() if k.startswith("gate/")}
    return dict(
        loss=float(value),
        loss_dtype=str(value.dtype),
        grad_dtypes=sorted({str(leaf.dtype) for leaf in jax.tree_util.tree_leaves(grads)}),
        float32_in_jaxpr=jaxpr.count("f32"),
        gates=gate_metrics,
        grad_keys=sorted("/".join(k) for k in flax.traverse_util.flatten_dict(grads)),
        trainable_keys=sorted("/".join(k) for k in flax.traverse_util.flatten_dict(trainable)),
        frozen_keys=sorted("/".join(k) for k in flax.traverse_util.flatten_dict(frozen)),
        directions=results,
    )


def _leaves_with_paths(tree):
    """(path, leaf) in `ravel_pytree`'s order (the pytree flattening order of a dict tree)."""
    import jax

    return [
        (tuple(k.key for k in path), leaf)
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    ]


def _main(out):
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np

    # Only in this process: the model's float32 pins become float64 (see the module doc).
    jnp.float32 = jnp.float64
    rng = np.random.default_rng(SEED)
    report = {name: _check_preset(name, rng) for name in PRESETS}
    with open(out, "w") as f:
        json.dump(report, f, indent=1)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("gradients") / "report.json"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    try:
        done = subprocess.run(
            [sys.executable, os.path.abspath(__file__), str(out)],
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,  # subprocess.run kills the child when this expires
        )
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"the float64 gradient check ran past {TIMEOUT_S} s:\n{error.stderr}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    with open(out) as f:
        return json.load(f)


@pytest.mark.parametrize("name", PRESETS)
def test_the_loss_is_float64_throughout(report, name):
    result = report[name]
    assert result["float32_in_jaxpr"] == 0
    assert result["loss_dtype"] == "float64" and result["grad_dtypes"] == ["float64"]


@pytest.mark.parametrize("name", PRESETS)
def test_gradients_match_central_differences(report, name):
    result = report[name]
    assert result["gates"], "the preset has no gates"
    # Gates away from saturation, so their gradients are not vanishingly small.
    assert all(0.01 < v < 0.99 for v in result["gates"].values()), result["gates"]
    for d in result["directions"]:
        assert d["iou_stable"], f"the measured IoU changed along {d['direction']}: {d}"
        assert abs(d["analytic"]) > 1e-6, f"a vanishing derivative tests nothing: {d}"
        assert d["rel_err"] < RTOL, d


@pytest.mark.parametrize("name", PRESETS)
def test_only_trainable_parameters_get_gradients(report, name):
    result = report[name]
    assert result["grad_keys"] == result["trainable_keys"]
    assert not set(result["grad_keys"]) & set(result["frozen_keys"])
    assert any("gate_" in k for k in result["grad_keys"])
    # Everything the encoder had before PEFT (e.g. its qkv kernels) is frozen.
    assert "image_encoder/blocks_0/attn/qkv/kernel" in result["frozen_keys"]


if __name__ == "__main__":
    _main(sys.argv[1])
