"""Small SAM configurations that together cover the architecture's degrees of freedom."""

from mopeft_jax.sam.config import SamConfig

SMALL_CONFIGS = {
    # Windows that do not divide the 8x8 grid (padding), one global block.
    "windowed_padded": SamConfig(
        encoder_embed_dim=64,
        encoder_depth=3,
        encoder_num_heads=4,
        encoder_global_attn_indexes=(1,),
        image_size=128,
        patch_size=16,
        window_size=3,
        prompt_embed_dim=32,
        mask_in_chans=16,
        decoder_mlp_dim=64,
        decoder_num_heads=4,
        iou_head_hidden_dim=32,
    ),
    # Patch 8 on a non-power-of-two image, 3 heads, two global blocks, one decoder block,
    # two multimask outputs, a shallower IoU head, few mask-prompt channels.
    "patch8_two_global": SamConfig(
        encoder_embed_dim=96,
        encoder_depth=4,
        encoder_num_heads=3,
        encoder_global_attn_indexes=(0, 3),
        image_size=160,
        patch_size=8,
        window_size=7,
        mlp_ratio=2.0,
        prompt_embed_dim=64,
        mask_in_chans=8,
        decoder_depth=1,
        decoder_mlp_dim=128,
        decoder_num_heads=8,
        num_multimask_outputs=2,
        iou_head_depth=2,
        iou_head_hidden_dim=48,
    ),
    # Windowed blocks only, no downsampling in the decoder's cross-attention.
    "windows_only": SamConfig(
        encoder_embed_dim=48,
        encoder_depth=2,
        encoder_num_heads=2,
        encoder_global_attn_indexes=(),
        image_size=96,
        patch_size=16,
        window_size=4,
        prompt_embed_dim=16,
        mask_in_chans=16,
        decoder_mlp_dim=32,
        decoder_num_heads=2,
        attention_downsample_rate=1,
        iou_head_hidden_dim=16,
    ),
    # Global attention everywhere (window 0), a single head.
    "global_only": SamConfig(
        encoder_embed_dim=32,
        encoder_depth=2,
        encoder_num_heads=1,
        encoder_global_attn_indexes=(0, 1),
        image_size=64,
        patch_size=16,
        window_size=0,
        prompt_embed_dim=32,
        mask_in_chans=16,
        decoder_depth=3,
        decoder_mlp_dim=48,
        decoder_num_heads=8,
        iou_head_hidden_dim=32,
    ),
}

# The smallest SAM the pipeline tests run end to end: one global block on a 4 x 4 grid.
MINIMAL = SamConfig(
    encoder_embed_dim=32,
    encoder_depth=1,
    encoder_num_heads=1,
    encoder_global_attn_indexes=(0,),
    image_size=64,
    window_size=0,
    prompt_embed_dim=32,
    decoder_mlp_dim=32,
    iou_head_hidden_dim=32,
)
