"""The accelerator benchmark (`--only accelerator`, the default on a GPU), on a tiny SAM on
this CPU: every framework's row is measured, with FLOPs counted from the shapes, and the
report gives MFU and the ratios against the peers from those rows."""

import numpy as np

from experiments import benchmark
from mopeft_jax.sam.config import SamConfig
from mopeft_jax.sam.flops import encoder_flops, train_step_flops


def test_tiny_accelerator_rows_and_report():
    config = SamConfig.tiny(dtype="bfloat16")
    rows = benchmark.encoder_rows(config, "tiny", batch=1, repeats=1)
    rows += benchmark.train_rows(config, batch=1, num_prompts=2, repeats=1, methods=("lora",))
    assert [r.framework for r in rows] == [
        "mopeft-jax (attention=auto)",
        "official SAM (bf16 autocast)",
        "HF transformers (sdpa, bf16)",
        "mopeft-jax lora",
        "mopeft-jax lora, compile from the persistent cache (traced anew)",
        "HF SamModel + peft LoRA (r=8, qkv)",
        "HF SamModel, every weight",
    ]
    timed = [r for r in rows if "persistent cache" not in r.framework]
    assert all(r.images_per_s > 0 for r in timed)
    assert all(r.flops_per_image == encoder_flops(config) for r in rows[:3])
    # LoRA trains neither the encoder's nor the decoder's own weights; HF full fine-tuning both.
    assert rows[3].flops_per_image == train_step_flops(config, 2, False, False)
    assert rows[5].flops_per_image == rows[3].flops_per_image
    assert rows[6].flops_per_image == train_step_flops(config, 2, True, True)
    assert rows[0].compile_s > 0 and rows[3].compile_s > 0 and rows[4].compile_s > 0
    assert rows[3].peak_bytes > 4 * 700_000  # at least the tiny SAM's float32 weights

    peak = 1e12
    report = benchmark.format_accelerator_report(rows, "a CPU", peak, peak_size=1024)
    mfu = 100 * rows[0].images_per_s * rows[0].flops_per_image / peak
    assert f"| {rows[0].images_per_s:.1f} | {mfu:.0f}% |" in report
    ratio = rows[0].images_per_s / rows[2].images_per_s
    assert f"- tiny encoder, batch 1, img/s, mopeft-jax / HF sdpa: {ratio:.2f}x" in report
    assert "MoPEFT / HF peft LoRA" not in report  # MoPEFT did not run
    assert np.isnan(rows[1].peak_bytes)  # PyTorch's peak memory is measured on CUDA only
