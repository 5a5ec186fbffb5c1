"""Speed of mopeft-jax against the official PyTorch SAM, run side by side in one process.

    python -m experiments.benchmark            # ViT-B, 1024x1024, appends to BENCHMARKS.md
    python -m experiments.benchmark --quick    # a tiny model, nothing written (smoke test)
    python -m experiments.benchmark --only amg --amg-points-per-side 8   # the mask generator alone
    python -m experiments.benchmark --only pipeline   # the input pipeline's images/s
    python -m experiments.benchmark --only compile    # train-step compile time, first and cached
    python -m experiments.benchmark --only accelerator --quick   # the GPU benchmark, tiny, any backend

Measures, with the same (random) weights in both frameworks:
  * the image encoder on one image (batch 1, float32), runs of the two interleaved;
    the JAX compile time is reported apart;
  * the prompt encoder + mask decoder for 100 box prompts against one image embedding;
  * the encoder's FLOPs (XLA cost analysis, see `xla_flops`) and the achieved FLOP/s,
    against a float32 matmul peak measured on the same machine;
  * the automatic mask generator on one synthetic uint8 image, against the official
    `SamAutomaticMaskGenerator` with the same options (`amg_benchmark`);
  * one train step of MoPEFT and of full fine-tuning, each against the forward of the
    same loss, with peak memory, trainable parameters and optimizer-state bytes, and the
    ratio of their FLOPs, the arithmetic floor of the time ratio;
  * (`--only compile`) the train step's trace and compile time on a first run and from JAX's
    persistent compilation cache, as the `experiments/` commands use it;
  * (on a GPU or TPU, or `--only accelerator`) bfloat16 encoders (ViT-B, ViT-H; batch 8)
    against HF transformers (sdpa) and the official SAM (bf16 autocast), and ViT-B train
    steps (MoPEFT, LoRA, full fine-tuning; 8 images x 16 boxes) against HF `SamModel` with HF
    peft LoRA and with every weight: images/s, MFU, peak memory, compile time (first and
    from the persistent cache). Needs `transformers` and `peft`; about 6 minutes on one GPU.
The process keeps freed host memory (`mopeft_jax.host_memory.retain_freed_memory`), which
both frameworks share. Needs the `test` extra (torch and segment-anything) for the reference.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime
import functools
import gc
import os
import pathlib
import platform
import sys
import tempfile
import time
from typing import Callable, List, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from mopeft_jax import Sam, SamConfig
from mopeft_jax.experiment.cli import enable_compilation_cache
from mopeft_jax.host_memory import retain_freed_memory
from mopeft_jax.peft import preset
from mopeft_jax.sam.flops import encoder_flops, train_step_flops

REPO = pathlib.Path(__file__).resolve().parents[1]


def _import_official():
    """torch and the official model's builder (imported only when the PyTorch side runs)."""
    import torch  # pylint: disable=g-import-not-at-top

    from weights_convert import official  # pylint: disable=g-import-not-at-top

    return torch, official


@dataclasses.dataclass
class Row:
    what: str
    jax_s: float
    torch_s: float
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.jax_s / self.torch_s


def interleaved_timings(fns: List[Callable[[], object]], repeats: int) -> List[float]:
    """Median wall time of each function, the functions run in turn `repeats` times."""
    times = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - start)
    return [float(np.median(t)) for t in times]


def matmul_peak_flops(n: int = 4096, repeats: int = 3, dtype=jnp.float32) -> float:
    """FLOP/s of one large jitted `dtype` matmul, the machine's practical peak."""
    a = jnp.asarray(np.random.RandomState(0).randn(n, n), dtype)
    matmul = jax.jit(lambda x, y: x @ y)
    matmul(a, a).block_until_ready()
    best = min(_timed(lambda: matmul(a, a).block_until_ready()) for _ in range(repeats))
    return 2 * n**3 / best


def xla_flops(fn, *args) -> float:
    """FLOPs of `fn(*args)` by XLA's cost analysis.

    The analysis counts a loop body once, so callers pass models with XLA's attention
    (`SamConfig.attention = "xla"`), which has no loops; the chunked kernel does the
    same matmuls in loops (and, in a backward, recomputes the logits).
    """
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"])


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def machine_description(retained_memory: bool) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    device = jax.devices()[0]
    return (
        f"{cpu}, {os.cpu_count()} cores, jax {jax.__version__} on {device.platform} "
        f"({device.device_kind}); "
        + ("freed host memory retained" if retained_memory else "default malloc")
        + " (mopeft_jax.host_memory)"
    )


def benchmark(config: SamConfig, repeats: int, num_prompts: int):
    torch, reference_lib = _import_official()
    reference = reference_lib.build_official_sam(config)
    from weights_convert import load_pytorch_checkpoint  # pylint: disable=g-import-not-at-top

    config, params = load_pytorch_checkpoint(
        reference.state_dict(), decoder_num_heads=config.decoder_num_heads
    )
    variables = {"params": params}
    model = Sam(config)
    rng = np.random.RandomState(0)
    image = rng.randn(1, config.image_size, config.image_size, 3).astype(np.float32)
    image_nchw = torch.from_numpy(image).permute(0, 3, 1, 2).contiguous()

    encode = jax.jit(functools.partial(model.apply, method=Sam.encode_image))
    start = time.perf_counter()
    compiled_encode = encode.lower(variables, image).compile()
    compile_s = time.perf_counter() - start
    counted = Sam(config.replace(attention="xla"))
    encoder_flops = xla_flops(
        functools.partial(counted.apply, method=Sam.encode_image), variables, image
    )

    def jax_encode():
        return compiled_encode(variables, image).block_until_ready()

    def torch_encode():
        with torch.no_grad():
            return reference.image_encoder(image_nchw)

    jax_encode()
    jax_enc_s, torch_enc_s = interleaved_timings([jax_encode, torch_encode], repeats)

    embedding = jax_encode()
    corners = np.sort(rng.rand(num_prompts, 2, 2) * config.image_size, axis=1)
    boxes = corners.reshape(num_prompts, 4).astype(np.float32)
    decode = jax.jit(functools.partial(model.apply, method=Sam.decode))
    decode(variables, embedding, boxes=boxes)[0].block_until_ready()
    torch_embedding = torch_encode()
    torch_boxes = torch.from_numpy(boxes)

    def jax_decode():
        return decode(variables, embedding, boxes=boxes)[0].block_until_ready()

    def torch_decode():
        with torch.no_grad():
            sparse, dense = reference.prompt_encoder(points=None, boxes=torch_boxes, masks=None)
            return reference.mask_decoder(
                image_embeddings=torch_embedding,
                image_pe=reference.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=True,
            )

    jax_dec_s, torch_dec_s = interleaved_timings([jax_decode, torch_decode], repeats)
    peak = matmul_peak_flops()
    rows = [
        Row(
            "image encoder, 1 image",
            jax_enc_s,
            torch_enc_s,
            f"JAX compile {compile_s:.1f} s (once)",
        ),
        Row(f"prompt encoder + mask decoder, {num_prompts} boxes", jax_dec_s, torch_dec_s),
    ]
    efficiency = dict(encoder_flops=encoder_flops, achieved=encoder_flops / jax_enc_s, peak=peak)
    return rows, efficiency, (config, params)


def amg_benchmark(config: SamConfig, points_per_side: int, repeats: int) -> Row:
    """`AutomaticMaskGenerator.generate` on one S x S image against the official generator.

    The same random weights both sides (the official model's, converted), the official's default
    options but `points_per_side`; runs interleaved, the JAX compile (first call) reported apart. Where torchvision is missing, the official's four torchvision
    calls get stand-ins: PIL's resize (what torchvision runs on a PIL image) and our NMS, which
    tests/inference checks against torchvision's semantics; both are a negligible part of a run.
    """
    torch, reference_lib = _import_official()
    from segment_anything import (  # pylint: disable=g-import-not-at-top
        SamAutomaticMaskGenerator,
        automatic_mask_generator,
    )
    from segment_anything.utils import transforms  # pylint: disable=g-import-not-at-top

    from mopeft_jax import AutomaticMaskGenerator  # pylint: disable=g-import-not-at-top
    from mopeft_jax.inference import masks  # pylint: disable=g-import-not-at-top
    from weights_convert import load_pytorch_checkpoint  # pylint: disable=g-import-not-at-top

    if getattr(sys.modules.get("torchvision"), "__file__", None) is None:  # the stand-in
        from PIL import Image  # pylint: disable=g-import-not-at-top

        transforms.to_pil_image = Image.fromarray
        transforms.resize = lambda image, size: image.resize(size[::-1], Image.BILINEAR)
        automatic_mask_generator.box_area = lambda b: torch.from_numpy(masks.box_area(b.numpy()))
        automatic_mask_generator.batched_nms = lambda boxes, scores, _, iou_threshold: (
            torch.from_numpy(masks.nms(boxes.numpy(), scores.numpy(), iou_threshold))
        )
    reference = reference_lib.build_official_sam(config)
    config, params = load_pytorch_checkpoint(
        reference.state_dict(), decoder_num_heads=config.decoder_num_heads
    )
    size = config.image_size
    rng = np.random.RandomState(0)
    y, x = np.mgrid[:size, :size]
    image = rng.randint(0, 60, (size, size, 3))
    for _ in range(12):  # discs of colour over noise
        cy, cx, radius = rng.rand(3) * (size, size, size / 4)
        image[(y - cy) ** 2 + (x - cx) ** 2 < radius**2] += rng.randint(60, 190, 3)
    image = np.clip(image, 0, 255).astype(np.uint8)

    ours = AutomaticMaskGenerator(config, params, points_per_side=points_per_side)
    official = SamAutomaticMaskGenerator(reference, points_per_side=points_per_side)
    start = time.perf_counter()
    counts = [len(ours.generate(image))]
    first_s = time.perf_counter() - start
    counts.append(len(official.generate(image)))
    jax_s, torch_s = interleaved_timings(
        [lambda: ours.generate(image), lambda: official.generate(image)], repeats
    )
    return Row(
        f"automatic masks, {points_per_side}x{points_per_side} points, 1 image {size}x{size}",
        jax_s,
        torch_s,
        f"JAX first call {first_s:.1f} s (compiles); masks {counts[0]} (JAX), "
        f"{counts[1]} (PyTorch); official default thresholds, random weights",
    )


@dataclasses.dataclass
class TrainRow:
    method: str
    step_s: float
    forward_s: float
    trainable: int
    optimizer_bytes: int
    peak_bytes: int
    compile_s: float
    flop_ratio: float  # step FLOPs / forward FLOPs, with XLA's attention


def _partitioned(params, method: str):
    """(trainable, frozen, optimizer) of `method` over `params` (arrays or shapes), with the
    default optimizer settings."""
    from mopeft_jax.peft import method as peft_method  # pylint: disable=g-import-not-at-top
    from mopeft_jax.train import partition  # pylint: disable=g-import-not-at-top

    labels = partition.label_params(params, peft_method(method).trainable)
    trainable, frozen = partition.split(params, labels)
    optimizer = partition.make_optimizer(
        partition.OptimizerConfig(), partition.split(labels, labels)[0]
    )
    return trainable, frozen, optimizer


def train_benchmark(
    config: SamConfig,
    sam_params,
    repeats: int,
    num_prompts: int = 4,
    methods=("mopeft", "full_finetune"),
):
    """One train step of MoPEFT and of full fine-tuning against the forward of the same loss."""
    from mopeft_jax.train.step import (  # pylint: disable=g-import-not-at-top
        LossConfig,
        TrainState,
        loss_and_metrics,
        make_train_step,
    )

    def forward_loss(model):
        return lambda trainable, frozen, batch: loss_and_metrics(
            trainable, frozen, batch, model, LossConfig()
        )[0]

    batch = _train_batch(config, num_prompts)
    rows = []
    for method in methods:
        model = Sam(config.replace(peft=preset(method)))
        params = model.init_params(jax.random.key(0), pretrained=sam_params)
        trainable, frozen, optimizer = _partitioned(params, method)
        state = TrainState.create(trainable, optimizer)
        start = time.perf_counter()
        step = jax.jit(make_train_step(model, optimizer)).lower(state, frozen, batch).compile()
        compile_s = time.perf_counter() - start
        forward = jax.jit(forward_loss(model)).lower(trainable, frozen, batch).compile()
        counted = Sam(model.config.replace(attention="xla"))
        flop_ratio = xla_flops(
            make_train_step(counted, optimizer), state, frozen, batch
        ) / xla_flops(forward_loss(counted), trainable, frozen, batch)
        memory = step.memory_analysis()
        peak = (
            memory.temp_size_in_bytes + memory.argument_size_in_bytes + memory.output_size_in_bytes
        )
        step_s, forward_s = interleaved_timings(
            [
                lambda: jax.block_until_ready(step(state, frozen, batch)),
                lambda: jax.block_until_ready(forward(trainable, frozen, batch)),
            ],
            repeats,
        )
        rows.append(
            TrainRow(
                method,
                step_s,
                forward_s,
                sum(x.size for x in jax.tree_util.tree_leaves(trainable)),
                sum(x.nbytes for x in jax.tree_util.tree_leaves(state.opt_state)),
                peak,
                compile_s,
                flop_ratio,
            )
        )
    return rows


@dataclasses.dataclass
class CompileRow:
    what: str
    trace_s: float  # tracing and lowering to StableHLO (not cached)
    first_s: float  # XLA compilation into an empty cache
    cached_s: float  # the same step, traced anew, from the persistent cache


def compile_benchmark(config: SamConfig, method: str, num_prompts: int = 4) -> CompileRow:
    """Trace and compile time of a `method` train step (1 image, `num_prompts` box prompts),
    first, then again with a step traced anew (a new jit object: nothing reused in memory),
    as a second run of a command would. Run it with the persistent compilation cache on, and
    empty, so that the second compile is a cache hit."""
    from mopeft_jax.train.step import (  # pylint: disable=g-import-not-at-top
        TrainState,
        make_train_step,
    )

    model = Sam(config.replace(peft=preset(method)))
    params = jax.eval_shape(model.init_params, jax.random.key(0))
    trainable, frozen, optimizer = _partitioned(params, method)
    state = jax.eval_shape(lambda t: TrainState.create(t, optimizer), trainable)
    batch = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _train_batch(config, num_prompts)
    )
    times = []
    for _ in range(2):
        start = time.perf_counter()
        lowered = jax.jit(make_train_step(model, optimizer)).lower(state, frozen, batch)
        traced = time.perf_counter()
        lowered.compile()
        times.append((traced - start, time.perf_counter() - traced))
    return CompileRow(method, times[0][0], times[0][1], times[1][1])


def format_compile_report(rows: List[CompileRow], machine: str, title: str) -> str:
    """The compile benchmark as a markdown section."""
    lines = [
        f"## Train-step compile time, {title}",
        "",
        f"{datetime.date.today().isoformat()}; {machine}. One image with 4 box prompts. The "
        "cached compile is a step traced anew in the same process, loaded from JAX's persistent "
        "compilation cache (what a second run of an `experiments/` command does).",
        "",
        "| method | trace + lower (s) | compile, empty cache (s) | compile, cached (s) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(f"| {r.what} | {r.trace_s:.1f} | {r.first_s:.1f} | {r.cached_s:.2f} |")
    return "\n".join(lines) + "\n"


def _train_batch(config: SamConfig, num_prompts: int, num_images: int = 1):
    """`num_images` images, each with `num_prompts` rectangular masks and their boxes."""
    rng = np.random.RandomState(1)
    low = config.low_res_mask_size
    scale = config.image_size / low
    masks = np.zeros((num_images, num_prompts, low, low), np.float32)
    boxes = np.zeros((num_images, num_prompts, 4), np.float32)
    for i in range(num_images):
        for p in range(num_prompts):
            y0, x0 = rng.randint(0, low // 2, 2)
            h, w = rng.randint(low // 8, low // 2, 2)
            masks[i, p, y0 : y0 + h, x0 : x0 + w] = 1
            boxes[i, p] = np.array([x0, y0, x0 + w, y0 + h]) * scale
    size = config.image_size
    image = rng.randn(num_images, size, size, 3).astype(np.float32)
    return dict(
        image=image,
        boxes=boxes,
        points=boxes[..., :2],
        masks=masks,
        valid=np.ones((num_images, num_prompts), bool),
    )


def format_train_report(rows: List[TrainRow], num_prompts: int) -> str:
    lines = [
        f"Training, 1 image with {num_prompts} box prompts; the forward is the same loss "
        "without gradients, timed in the same run. Peak memory from XLA's memory analysis "
        "of the compiled step (arguments + outputs + temporaries). FLOPs from XLA's cost "
        "analysis of the step and the forward with XLA's attention, whose backward stores "
        "the attention probabilities: the time ratio can only fall below the FLOP ratio if "
        "the backward runs more FLOP/s than the forward.",
        "",
        "| method | step (s) | forward (s) | step / forward | step / forward FLOPs | "
        "trainable params | optimizer state (MB) | peak memory (GB) | compile (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r.method} | {r.step_s:.2f} | {r.forward_s:.2f} | {r.step_s / r.forward_s:.2f}x | "
            f"{r.flop_ratio:.2f}x | {r.trainable:,} | {r.optimizer_bytes / 2**20:.1f} | "
            f"{r.peak_bytes / 2**30:.2f} | {r.compile_s:.0f} |"
        )
    return "\n".join(lines) + "\n"


def format_report(title: str, machine: str, rows: List[Row], efficiency: dict) -> str:
    lines = [
        f"## {title}",
        "",
        f"{datetime.date.today().isoformat()}; {machine}; torch {_torch_version()}, "
        f"{_torch_threads()} threads; float32, batch 1; median of interleaved runs.",
        "",
        "| what | mopeft-jax (s) | PyTorch (s) | JAX / PyTorch | note |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row.what} | {row.jax_s:.3f} | {row.torch_s:.3f} | {row.ratio:.2f}x | {row.note} |"
        )
    lines += [
        "",
        f"Encoder cost (XLA cost analysis): {efficiency['encoder_flops'] / 1e9:.0f} GFLOP; "
        f"achieved {efficiency['achieved'] / 1e9:.0f} GFLOP/s = "
        f"{100 * efficiency['achieved'] / efficiency['peak']:.0f}% of the measured float32 "
        f"matmul peak ({efficiency['peak'] / 1e9:.0f} GFLOP/s, 4096x4096 jitted).",
        "",
    ]
    return "\n".join(lines)


def format_amg_report(title: str, machine: str, row: Row) -> str:
    """The mask generator's row alone (`--only amg`), in the table of `format_report`."""
    return (
        f"## {title}: automatic mask generator\n\n"
        f"{datetime.date.today().isoformat()}; {machine}; torch {_torch_version()}, "
        f"{_torch_threads()} threads; float32; median of interleaved runs.\n\n"
        "| what | mopeft-jax (s) | PyTorch (s) | JAX / PyTorch | note |\n"
        "| --- | ---: | ---: | ---: | --- |\n"
        f"| {row.what} | {row.jax_s:.3f} | {row.torch_s:.3f} | {row.ratio:.2f}x | {row.note} |\n"
    )


# ----------------------------------------------------------------------------- input pipeline


@dataclasses.dataclass
class PipelineRow:
    """Host throughput of the training input pipeline with one setting.

    Attributes:
      what: the setting, in words.
      first_batch_s: wall time to the first batch (worker processes starting).
      images_per_s: images per second of wall time after the first batch.
      images_per_cpu_s: images per second of CPU time of every process involved, from the
        start (the figure per host core; worker start-up included).
      cpu_s: CPU seconds of those processes.
    """

    what: str
    first_batch_s: float
    images_per_s: float
    images_per_cpu_s: float
    cpu_s: float


def _cpu_seconds() -> float:
    """CPU time of this process and of its children that have exited."""
    import resource  # pylint: disable=g-import-not-at-top

    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def pipeline_benchmark(
    image_size: int = 1024,
    max_prompts: int = 16,
    num_images: int = 256,
    batch_size: int = 8,
    workers: tuple = (0, 2),
    num_scenes: int = 10,
) -> List[PipelineRow]:
    """Images per second of `mopeft_jax.data.pipeline` at SAM's input size.

    The source holds `num_scenes` synthetic scenes of every domain at `image_size`, generated
    before timing and cycled: the figures are the pipeline's own host work (SAM's resize,
    normalisation and padding, the label's resize, connected segments, `max_prompts` box
    prompts and their low-res masks, batching), not the scene generator's or an image
    decoder's, which are the dataset's cost.

    Rows: `preprocess_example` alone in this process, then one pass of `make_dataset` over
    `num_images` images for each worker count in `workers` (0: in this process, with grain's
    prefetch threads).
    """
    from mopeft_jax.data import synthetic  # pylint: disable=g-import-not-at-top
    from mopeft_jax.data.pipeline import (  # pylint: disable=g-import-not-at-top
        PipelineConfig,
        make_dataset,
        preprocess_example,
    )

    domains = (synthetic.SOURCE_DOMAIN, *synthetic.TARGET_DOMAINS)
    scenes = [
        synthetic.make_example(domains[i % len(domains)], i, image_size=image_size)
        for i in range(num_scenes)
    ]
    source = [scenes[i % num_scenes] for i in range(num_images)]  # references, no copies
    config = PipelineConfig(
        image_size=image_size,
        low_res_size=image_size // 4,
        max_prompts=max_prompts,
        batch_size=batch_size,
        shuffle=False,
        num_epochs=1,
    )
    rng = np.random.default_rng(0)
    preprocess_example(scenes[0], config, rng)  # warm-up
    start, cpu = time.perf_counter(), _cpu_seconds()
    for example in source:
        preprocess_example(example, config, rng)
    wall, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    rows = [
        PipelineRow("preprocess_example alone", 0.0, len(source) / wall, len(source) / cpu, cpu)
    ]

    for count in workers:
        dataset = make_dataset(
            source, dataclasses.replace(config, worker_count=count), shard_index=0, shard_count=1
        )
        start, cpu = time.perf_counter(), _cpu_seconds()
        iterator = iter(dataset)
        batch = next(iterator)
        first = time.perf_counter()
        images = 0
        for batch in iterator:
            images += len(batch["image"])
        wall = time.perf_counter() - first
        del iterator, batch
        gc.collect()  # the workers exit and are reaped: their CPU time counts
        cpu = _cpu_seconds() - cpu
        what = f"make_dataset, {count} worker processes" if count else "make_dataset, in process"
        rows.append(
            PipelineRow(what, first - start, images / wall, (images + batch_size) / cpu, cpu)
        )
    return rows


def format_pipeline_report(
    rows: List[PipelineRow], machine: str, image_size: int, max_prompts: int, batch_size: int
) -> str:
    """The pipeline benchmark as a markdown section."""
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    lines = [
        f"## Training input pipeline, {image_size}x{image_size}, {max_prompts} box prompts",
        "",
        f"{datetime.date.today().isoformat()}; {machine}; load average {load}. Synthetic scenes "
        "held in memory; SAM's preprocessing, prompts and low-res masks, batches of "
        f"{batch_size}. Images per CPU second (every process, worker start-up included) is the "
        "figure per host core; images per second counts from the first batch.",
        "",
        "| what | first batch (s) | images / s | images / CPU s | CPU s |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r.what} | {r.first_batch_s:.1f} | {r.images_per_s:.1f} | "
            f"{r.images_per_cpu_s:.1f} | {r.cpu_s:.1f} |"
        )
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- accelerators

GPU_METHODS = ("mopeft", "lora", "full_finetune")


@dataclasses.dataclass
class AcceleratorRow:
    what: str
    framework: str
    images_per_s: float
    flops_per_image: float  # counted from the shapes (mopeft_jax.sam.flops)
    peak_bytes: float = float("nan")
    compile_s: float = float("nan")


def hf_sam(config: SamConfig):
    """Hugging Face transformers' `SamModel` with `config`'s architecture, its own random
    weights and PyTorch's scaled-dot-product attention ("sdpa")."""
    _, official = _import_official()
    with official.torchvision_stand_in_hidden():
        from transformers import SamConfig as HFSamConfig  # pylint: disable=g-import-not-at-top
        from transformers import SamModel  # pylint: disable=g-import-not-at-top

    c = config
    hf_config = HFSamConfig(
        vision_config=dict(
            hidden_size=c.encoder_embed_dim,
            output_channels=c.prompt_embed_dim,
            num_hidden_layers=c.encoder_depth,
            num_attention_heads=c.encoder_num_heads,
            image_size=c.image_size,
            patch_size=c.patch_size,
            mlp_ratio=c.mlp_ratio,
            mlp_dim=int(c.encoder_embed_dim * c.mlp_ratio),
            window_size=c.window_size,
            global_attn_indexes=list(c.encoder_global_attn_indexes),
            num_pos_feats=c.prompt_embed_dim // 2,
        ),
        prompt_encoder_config=dict(
            hidden_size=c.prompt_embed_dim,
            image_size=c.image_size,
            patch_size=c.patch_size,
            mask_input_channels=c.mask_in_chans,
        ),
        mask_decoder_config=dict(
            hidden_size=c.prompt_embed_dim,
            mlp_dim=c.decoder_mlp_dim,
            num_hidden_layers=c.decoder_depth,
            num_attention_heads=c.decoder_num_heads,
            attention_downsample_rate=c.attention_downsample_rate,
            num_multimask_outputs=c.num_multimask_outputs,
            iou_head_depth=c.iou_head_depth,
            iou_head_hidden_dim=c.iou_head_hidden_dim,
        ),
    )
    return SamModel._from_config(hf_config, attn_implementation="sdpa")


def _torch_device(torch) -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _torch_seconds(torch, fn, repeats: int) -> float:
    """Median wall time of `fn` on the torch device, after two warm-up calls."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(2):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _jax_seconds(fn, repeats: int) -> float:
    """Median wall time of `fn` (which blocks on its result), after one warm-up call."""
    fn()
    return float(np.median([_timed(fn) for _ in range(repeats)]))


def _peak_bytes(compiled) -> float:
    memory = compiled.memory_analysis()
    return float(
        memory.temp_size_in_bytes + memory.argument_size_in_bytes + memory.output_size_in_bytes
    )


def _official_params(config: SamConfig):
    """(the official PyTorch SAM with random weights, the same weights as Flax params)."""
    from weights_convert import load_pytorch_checkpoint  # pylint: disable=g-import-not-at-top

    _, official = _import_official()
    reference = official.build_official_sam(config.replace(dtype="float32"))
    _, params = load_pytorch_checkpoint(
        reference.state_dict(), decoder_num_heads=config.decoder_num_heads
    )
    return reference, params


def encoder_rows(config: SamConfig, name: str, batch: int, repeats: int) -> List[AcceleratorRow]:
    """The image encoder on `batch` images: mopeft-jax (`config`'s dtype and attention), HF
    transformers (sdpa, the model cast to bfloat16) and the official SAM (bfloat16 autocast)."""
    torch, _ = _import_official()
    device = _torch_device(torch)
    reference, params = _official_params(config)
    flops = encoder_flops(config)
    images = np.random.RandomState(0).randn(batch, config.image_size, config.image_size, 3)
    images = jnp.asarray(images, jnp.float32)
    variables = jax.device_put({"params": params})
    encode = jax.jit(functools.partial(Sam(config).apply, method=Sam.encode_image))
    start = time.perf_counter()
    compiled = encode.lower(variables, images).compile()
    compile_s = time.perf_counter() - start
    jax_s = _jax_seconds(lambda: compiled(variables, images).block_until_ready(), repeats)
    rows = [
        AcceleratorRow(
            f"{name} encoder, batch {batch}",
            f"mopeft-jax (attention={config.attention})",
            batch / jax_s,
            flops,
            _peak_bytes(compiled),
            compile_s,
        )
    ]
    pixels = torch.from_numpy(np.asarray(images)).permute(0, 3, 1, 2).contiguous().to(device)
    official_encoder = reference.image_encoder.to(device)
    hf_encoder = hf_sam(config).vision_encoder.to(device, torch.bfloat16)
    hf_pixels = pixels.to(torch.bfloat16)

    def official_forward():
        with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16):
            return official_encoder(pixels)

    def hf_forward():
        with torch.no_grad():
            return hf_encoder(hf_pixels)

    for framework, forward in (
        ("official SAM (bf16 autocast)", official_forward),
        ("HF transformers (sdpa, bf16)", hf_forward),
    ):
        seconds = _torch_seconds(torch, forward, repeats)
        rows.append(
            AcceleratorRow(f"{name} encoder, batch {batch}", framework, batch / seconds, flops)
        )
    return rows


def _step_flops(config: SamConfig, method: str, num_prompts: int) -> float:
    from mopeft_jax.peft import method as peft_method  # pylint: disable=g-import-not-at-top

    trainable = peft_method(method).trainable
    return train_step_flops(
        config,
        num_prompts,
        encoder_weights=trainable == "all",
        decoder_weights=trainable in ("all", "peft+decoder", "decoder"),
    )


def train_rows(
    config: SamConfig, batch: int, num_prompts: int, repeats: int, methods=GPU_METHODS
) -> List[AcceleratorRow]:
    """Train steps on `batch` images x `num_prompts` boxes: mopeft-jax's `methods` (their
    compilations run at once, in threads), then HF `SamModel` with HF peft LoRA (r=8 on
    qkv) and with every weight training, both under bfloat16 autocast with AdamW.

    The last row is the first method's step traced anew and loaded from the persistent
    compilation cache (turn the cache on, empty, before calling).
    """
    from mopeft_jax.train.step import (  # pylint: disable=g-import-not-at-top
        TrainState,
        make_train_step,
    )

    _, sam_params = _official_params(config)
    host_batch = _train_batch(config, num_prompts, num_images=batch)
    device_batch = jax.device_put(host_batch)

    def build(method):
        model = Sam(config.replace(peft=preset(method)))
        params = model.init_params(jax.random.key(0), pretrained=sam_params)
        trainable, frozen, optimizer = _partitioned(params, method)
        state = TrainState.create(trainable, optimizer)
        start = time.perf_counter()
        step = jax.jit(make_train_step(model, optimizer))
        compiled = step.lower(state, frozen, device_batch).compile()
        return model, optimizer, state, frozen, compiled, time.perf_counter() - start

    with concurrent.futures.ThreadPoolExecutor(len(methods)) as pool:
        built = dict(zip(methods, pool.map(build, methods)))
    rows = []
    for method, (_, _, state, frozen, compiled, compile_s) in built.items():
        seconds = _jax_seconds(
            lambda: jax.block_until_ready(compiled(state, frozen, device_batch)), repeats
        )
        rows.append(
            AcceleratorRow(
                f"train step, {batch} x {num_prompts} boxes",
                f"mopeft-jax {method}",
                batch / seconds,
                _step_flops(config, method, num_prompts),
                _peak_bytes(compiled),
                compile_s,
            )
        )
    first = methods[0]
    model, optimizer, state, frozen, _, _ = built[first]
    del built
    start = time.perf_counter()
    jax.jit(make_train_step(model, optimizer)).lower(state, frozen, device_batch).compile()
    rows.append(
        AcceleratorRow(
            f"train step, {batch} x {num_prompts} boxes",
            f"mopeft-jax {first}, compile from the persistent cache (traced anew)",
            float("nan"),
            float("nan"),
            compile_s=time.perf_counter() - start,
        )
    )
    for lora in (True, False):
        rows.append(_hf_train_row(config, host_batch, lora, repeats))
    return rows


def _hf_train_row(config: SamConfig, host_batch, lora: bool, repeats: int) -> AcceleratorRow:
    """HF `SamModel` trained on `host_batch` with a sigmoid cross-entropy on its single-mask
    output: with HF peft LoRA (r=8, alpha 8, on the encoder's qkv) or every weight."""
    torch, _ = _import_official()
    device = _torch_device(torch)
    model = hf_sam(config).to(device)
    if lora:
        from peft import LoraConfig, get_peft_model  # pylint: disable=g-import-not-at-top

        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=8, target_modules=["qkv"]))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    pixels = torch.from_numpy(host_batch["image"]).permute(0, 3, 1, 2).contiguous().to(device)
    boxes = torch.from_numpy(host_batch["boxes"]).to(device)
    targets = torch.from_numpy(host_batch["masks"]).to(device)

    def step():
        with torch.autocast(device, dtype=torch.bfloat16):
            masks = model(pixel_values=pixels, input_boxes=boxes, multimask_output=False)
        logits = masks.pred_masks[:, :, 0].float()
        torch.nn.functional.binary_cross_entropy_with_logits(logits, targets).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = _torch_seconds(torch, step, repeats)
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else float("nan")
    batch, num_prompts = host_batch["boxes"].shape[:2]
    encoder_weights = not lora
    return AcceleratorRow(
        f"train step, {batch} x {num_prompts} boxes",
        "HF SamModel + peft LoRA (r=8, qkv)" if lora else "HF SamModel, every weight",
        batch / seconds,
        train_step_flops(config, num_prompts, encoder_weights, decoder_weights=not lora),
        float(peak),
    )


def format_accelerator_report(
    rows: List[AcceleratorRow], machine: str, peak: float, peak_size: int = 8192
) -> str:
    """The accelerator benchmark as a markdown section, with the ratios issue 13 tracks."""
    lines = [
        "## SAM on an accelerator: encoders and train steps, bfloat16",
        "",
        f"{datetime.date.today().isoformat()}; {machine}; torch {_torch_version()}. One process, "
        "the same random weights for mopeft-jax and the official SAM (HF SamModel has its own). "
        "MFU: FLOPs counted from the shapes (`mopeft_jax.sam.flops`; a train step is the "
        "forward, its input gradients and the trained weights' gradients) over the "
        f"measured bfloat16 matmul peak, {peak / 1e12:.1f} TFLOP/s (jitted {peak_size}-cube). Peak "
        "memory: XLA's memory analysis of the compiled program (arguments, outputs, "
        "temporaries); `torch.cuda.max_memory_allocated` for PyTorch.",
        "",
        "| what | framework | img/s | MFU | peak memory (GB) | compile (s) |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]

    def number(value, fmt):
        return "" if np.isnan(value) else format(value, fmt)

    for r in rows:
        mfu = r.images_per_s * r.flops_per_image / peak
        lines.append(
            f"| {r.what} | {r.framework} | {number(r.images_per_s, '.1f')} | "
            f"{number(100 * mfu, '.0f')}{'' if np.isnan(mfu) else '%'} | "
            f"{number(r.peak_bytes / 2**30, '.1f')} | {number(r.compile_s, '.0f')} |"
        )
    by_framework = {(r.what, r.framework): r for r in rows}
    ratios = []
    for r in rows:
        if r.framework == "mopeft-jax mopeft":
            peer = by_framework.get((r.what, "HF SamModel + peft LoRA (r=8, qkv)"))
            if peer is not None:
                memory = r.peak_bytes / peer.peak_bytes
                ratios.append(
                    f"train img/s, MoPEFT / HF peft LoRA: {r.images_per_s / peer.images_per_s:.2f}x"
                    + ("" if np.isnan(memory) else f"; peak memory: {memory:.2f}x")
                )
        if r.framework.startswith("mopeft-jax (attention="):
            peer = by_framework.get((r.what, "HF transformers (sdpa, bf16)"))
            if peer is not None:
                ratios.append(
                    f"{r.what}, img/s, mopeft-jax / HF sdpa: "
                    f"{r.images_per_s / peer.images_per_s:.2f}x"
                )
    if ratios:
        lines += ["", *[f"- {ratio}" for ratio in ratios]]
    return "\n".join(lines) + "\n"


def accelerator_benchmark(quick: bool, repeats: int) -> Tuple[List[AcceleratorRow], float, int]:
    """Every row of the accelerator benchmark, the bfloat16 matmul peak and its matrix size.

    Full: ViT-B and ViT-H encoders at batch 8, ViT-B train steps at 8 images x 16 boxes.
    `quick`: the tiny SAM, 2 images x 4 boxes, for a smoke test on any backend.
    """
    if quick:
        encoders = [("tiny", SamConfig.tiny(dtype="bfloat16"))]
        train_config, batch, prompts, peak_size = SamConfig.tiny(dtype="bfloat16"), 2, 4, 1024
    else:
        encoders = [
            ("ViT-B", SamConfig.vit_b(dtype="bfloat16")),
            ("ViT-H", SamConfig.vit_h(dtype="bfloat16")),
        ]
        train_config, batch, prompts, peak_size = SamConfig.vit_b(dtype="bfloat16"), 8, 16, 8192
    peak = matmul_peak_flops(n=peak_size, repeats=repeats, dtype=jnp.bfloat16)
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        enable_compilation_cache(cache)  # empty: the first compilations are cold
        for name, config in encoders:
            rows += encoder_rows(config, name, 2 if quick else 8, repeats)
        rows += train_rows(train_config, batch, prompts, repeats)
    return rows, peak, peak_size


def append_report(output: str, report: str) -> None:
    """Appends a markdown `report` to the file `output` (created with a title if missing)."""
    path = pathlib.Path(output)
    existing = path.read_text() if path.exists() else "# Benchmarks\n\n"
    path.write_text(existing.rstrip("\n") + "\n\n" + report)
    print(f"Appended to {path}")


def _torch_version() -> str:
    import torch  # pylint: disable=g-import-not-at-top

    return torch.__version__


def _torch_threads() -> int:
    import torch  # pylint: disable=g-import-not-at-top

    return torch.get_num_threads()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="a tiny model, printed only (a smoke test)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs per timing")
    parser.add_argument("--prompts", type=int, default=100, help="box prompts for the decoder")
    parser.add_argument("--no-train", action="store_true", help="skip the train-step timings")
    parser.add_argument(
        "--only",
        choices=["amg", "pipeline", "compile", "accelerator"],
        help="run one benchmark alone: amg, the automatic mask generator; pipeline, the "
        "training input pipeline's throughput; compile, the train step's compile time; "
        "accelerator, bfloat16 encoders and train steps against HF transformers and peft "
        "(the default on a GPU or TPU)",
    )
    parser.add_argument(
        "--amg-points-per-side", type=int, default=32, help="point grid of the mask generator"
    )
    parser.add_argument(
        "--output",
        default=str(REPO / "BENCHMARKS.md"),
        help="markdown file the table is appended to ('' to skip)",
    )
    parser.add_argument(
        "--pipeline_workers",
        default=f"0,{os.cpu_count()}",
        help="pipeline: worker process counts to time make_dataset with, comma-separated",
    )
    args = parser.parse_args(argv)
    retained = retain_freed_memory()  # before the first computation; see mopeft_jax.host_memory
    if args.only == "accelerator" or (args.only is None and jax.default_backend() != "cpu"):
        rows, peak, peak_size = accelerator_benchmark(args.quick, args.repeats)
        report = format_accelerator_report(rows, machine_description(retained), peak, peak_size)
        print(report)
        if args.output and not args.quick:
            append_report(args.output, report)
        return 0
    if args.only == "pipeline":
        size, prompts, batch = (128, 8, 4) if args.quick else (1024, 16, 8)
        workers = tuple(int(w) for w in args.pipeline_workers.split(","))
        rows = pipeline_benchmark(
            size, prompts, num_images=16 if args.quick else 256, batch_size=batch, workers=workers
        )
        report = format_pipeline_report(rows, machine_description(retained), size, prompts, batch)
        print(report)
        if args.output and not args.quick:
            append_report(args.output, report)
        return 0

    if args.only == "compile":
        config, title = (
            (SamConfig.tiny(), "tiny SAM")
            if args.quick
            else (SamConfig.vit_b(), "SAM ViT-B, 1024x1024")
        )
        with tempfile.TemporaryDirectory() as cache:
            enable_compilation_cache(cache)
            methods = ("lora",) if args.quick else ("mopeft", "lora", "full_finetune")
            rows = [compile_benchmark(config, m) for m in methods]
        report = format_compile_report(rows, machine_description(retained), title)
        print(report)
        if args.output and not args.quick:
            append_report(args.output, report)
        return 0

    if args.quick:
        config = SamConfig(
            encoder_embed_dim=64,
            encoder_depth=2,
            encoder_num_heads=2,
            encoder_global_attn_indexes=(1,),
            image_size=128,
            window_size=4,
        )
        title = "Smoke test (tiny model)"
    else:
        config = SamConfig.vit_b()
        title = "SAM ViT-B, 1024x1024, CPU inference"
    amg = amg_benchmark(config, args.amg_points_per_side, args.repeats)
    if args.only == "amg":
        report = format_amg_report(title, machine_description(retained), amg)
    else:
        rows, efficiency, (config, params) = benchmark(config, args.repeats, args.prompts)
        rows.append(amg)
        report = format_report(title, machine_description(retained), rows, efficiency)
    if not args.no_train and args.only is None:
        report += "\n" + format_train_report(train_benchmark(config, params, args.repeats), 4)
    print(report)
    if args.output and not args.quick:
        append_report(args.output, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
