"""The ONNX prompt decoder has the official graph's inputs and computes what our decoder and
the official `SamOnnxModel` compute, run by onnxruntime."""

import sys

import numpy as np
import pytest
import torch
from export_setup import CONFIG, decode, official_sam
from segment_anything.utils.onnx import SamOnnxModel

from mopeft_jax.export import decoder_onnx, point_prompts

GRID, DIM, LOW_RES = CONFIG.embedding_size, CONFIG.prompt_embed_dim, CONFIG.low_res_mask_size
# onnxruntime's float32 kernels (its own GEMM, erf and softmax, fused by its graph
# optimiser) round differently from XLA's and PyTorch's: measured |diff| <= 6e-7 on mask
# logits and IoU predictions of scale 1.
ATOL = 1e-5


def prompt_sets():
    """Two points (and the padding point); a point, a box and a mask input. Each as
    `Sam.decode`'s keyword arguments and the official graph's point/mask inputs."""
    rng = np.random.RandomState(0)
    points, labels = np.array([[[20.0, 30.0], [90.0, 100.0]]]), np.array([[1, 0]])
    box = np.array([[10.0, 12.0, 70.0, 90.0]])
    mask = rng.randn(1, LOW_RES, LOW_RES, 1).astype(np.float32)
    no_mask = np.zeros((1, LOW_RES, LOW_RES, 1), np.float32)
    return [
        (
            dict(point_coords=points, point_labels=labels),
            (*point_prompts(points, labels), no_mask, 0.0),
        ),
        (
            dict(
                point_coords=points[:, :1], point_labels=labels[:, :1], boxes=box, mask_inputs=mask
            ),
            (*point_prompts(points[:, :1], labels[:, :1], box), mask, 1.0),
        ),
    ]


@pytest.fixture(scope="module")
def session():
    pytest.importorskip("jax2onnx")
    ort = pytest.importorskip("onnxruntime")
    _, params = official_sam()
    model = decoder_onnx(CONFIG, params)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def onnx_inputs(embedding, coords, labels, mask, has_mask):
    """The official graph's inputs: NCHW embedding and mask, float32 labels."""
    return {
        "image_embeddings": embedding.transpose(0, 3, 1, 2),
        "point_coords": coords.astype(np.float32),
        "point_labels": labels.astype(np.float32),
        "mask_input": mask.transpose(0, 3, 1, 2),
        "has_mask_input": np.array([has_mask], np.float32),
    }


def test_inputs_and_outputs_mirror_the_official_graph(session):
    inputs = [(i.name, i.shape, i.type) for i in session.get_inputs()]
    assert inputs == [
        ("image_embeddings", [1, DIM, GRID, GRID], "tensor(float)"),
        ("point_coords", [1, "num_points", 2], "tensor(float)"),
        ("point_labels", [1, "num_points"], "tensor(float)"),
        ("mask_input", [1, 1, LOW_RES, LOW_RES], "tensor(float)"),
        ("has_mask_input", [1], "tensor(float)"),
    ]
    assert [o.name for o in session.get_outputs()] == ["iou_predictions", "low_res_masks"]


def test_onnx_decoder_matches_ours_and_the_official_one(session):
    official, params = official_sam()
    official_onnx = SamOnnxModel(official, return_single_mask=False)
    embedding = np.random.RandomState(1).randn(1, GRID, GRID, DIM).astype(np.float32)
    for kwargs, prompts in prompt_sets():
        feed = onnx_inputs(embedding, *prompts)
        iou, masks = session.run(None, feed)
        assert masks.shape == (1, 3, LOW_RES, LOW_RES)

        args = [kwargs.get(k) for k in ("point_coords", "point_labels", "boxes", "mask_inputs")]
        ours_masks, ours_iou = decode(CONFIG)(params, embedding, *args)
        np.testing.assert_allclose(masks, ours_masks, rtol=0, atol=ATOL)
        np.testing.assert_allclose(iou, ours_iou, rtol=0, atol=ATOL)

        with torch.no_grad():
            torch_feed = {k: torch.from_numpy(v) for k, v in feed.items()}
            size = torch.tensor([CONFIG.image_size] * 2, dtype=torch.float32)
            _, official_iou, official_masks = official_onnx(**torch_feed, orig_im_size=size)
        # The official graph returns every token's mask; ours the multimask ones (1, 2, 3).
        np.testing.assert_allclose(masks, official_masks[:, 1:].numpy(), rtol=0, atol=ATOL)
        np.testing.assert_allclose(iou, official_iou[:, 1:].numpy(), rtol=0, atol=ATOL)


def test_without_jax2onnx_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "jax2onnx", None)  # makes `import jax2onnx` fail
    with pytest.raises(
        ImportError,
        match=r"^ONNX export needs jax2onnx and onnx: pip install onnx==1\.23\.2 onnx-ir==1\.1\.0 "
        r"onnxruntime==1\.32\.0 && pip install --no-deps jax2onnx==0\.17\.1$",
    ):
        decoder_onnx(CONFIG, {})
