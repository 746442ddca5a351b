"""
Models built in code with random weights, offline, the way diffusers' own
tests build dummy components: real pipelines of each class (tokenizer, T5
encoder, 3D transformer, scheduler, causal 3D VAE; for image to video a
CLIP image encoder) where only the weights are random.

One builder per family (build_cogvideox, build_wan), given a Size: the tiny
twins (small configs, seconds on a CPU) and the full-size random twins (the
published architectures, for GPU benchmarks) are the same code with other
numbers. The tiny VAEs keep the real models' 8x spatial and 4x temporal
compression, or the denoiser would work at near pixel resolution and crawl.
"""

import string
from dataclasses import dataclass
from functools import partial

import torch
from diffusers import (
    AutoencoderKLCogVideoX,
    AutoencoderKLWan,
    CogVideoXDDIMScheduler,
    CogVideoXDPMScheduler,
    CogVideoXImageToVideoPipeline,
    CogVideoXPipeline,
    CogVideoXTransformer3DModel,
    UniPCMultistepScheduler,
    WanImageToVideoPipeline,
    WanPipeline,
    WanTransformer3DModel,
)
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    CLIPVisionModel,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
    UMT5Config,
    UMT5EncoderModel,
)

# Enough pieces that ordinary English prompts tokenize to words, not <unk>.
_WORDS = (
    "a an the of and in on with at to over under by from into near through "
    "sunset sunrise mountain mountains city night day cat dog bird fish horse "
    "running walking flying swimming water sea ocean river sky cloud clouds "
    "red blue green yellow black white golden beautiful slow fast camera view "
    "forest tree trees street car people person man woman child light dark"
).split()


def build_tiny_tokenizer():
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [("\u2581" + word, -float(rank + 1)) for rank, word in enumerate(_WORDS)]
    # Single characters last, with low scores, so any word still splits into
    # known pieces instead of one <unk>.
    vocab += [("\u2581", -90.0)]
    vocab += [(char, -100.0) for char in string.ascii_letters + string.digits + string.punctuation]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


# A two-layer T5 encoder with 32-wide embeddings (the tiny transformers' text_dim).
TINY_T5 = dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, relative_attention_num_buckets=8)
# UMT5-XXL's encoder, as Wan ships it. Every text encoder here has the tiny
# vocabulary: the prompt is padded to the same length either way, so the cost is the same.
UMT5_XXL = dict(
    d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64, relative_attention_num_buckets=32,
    feed_forward_proj="gated-gelu",
)
# T5 v1.1 XXL's encoder, CogVideoX's text encoder.
T5_XXL = dict(d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64, feed_forward_proj="gated-gelu")


@dataclass(frozen=True)
class Size:
    """One member of a family: each module's constructor arguments, and which variant of the family it is."""

    transformer: dict
    vae: dict
    # None: TINY_T5.
    text_encoder: dict | None = None
    # The dtype the real model is served in, for full-size twins (built on the
    # GPU, cast as from_pretrained would); None for tiny ones (float32, CPU).
    served_dtype: torch.dtype | None = None
    # CogVideoX: image to video, the first frame's latents beside the noise.
    image_to_video: bool = False
    # Wan: a CLIP vision tower for image to video; with first_last_frame, FLF2V.
    image_encoder: dict | None = None
    first_last_frame: bool = False
    # Wan's UniPC flow shift, and Wan 2.2's per-frame timesteps.
    flow_shift: float = 3.0
    expand_timesteps: bool = False


def _build_target(size: Size, device: str | None, dtype) -> tuple[str, "torch.dtype | None"]:
    """Tiny models build on the CPU; full-size ones on the GPU, where initialisation takes seconds, not minutes."""
    if size.served_dtype is None:
        return device or "cpu", dtype
    if device is None:
        if not torch.cuda.is_available():
            raise RuntimeError("full-size random models need a GPU: in float32 on a CPU they would take 20-30 GB")
        device = "cuda"
    if dtype is None:
        dtype = size.served_dtype if device.startswith("cuda") else torch.float32
    return device, dtype


def _text_encoder_config(size: Size, tokenizer) -> dict:
    return {**(size.text_encoder or TINY_T5), "vocab_size": len(tokenizer)}


def cast_like_from_pretrained(model, dtype) -> None:
    """
    model.to(dtype), but the parameters a checkpoint loaded with
    from_pretrained(torch_dtype=dtype) keeps in float32 (the class's
    _keep_in_fp32_modules: T5's `wo`, Wan's norms and time embedder) stay
    there, so random twins compute as the real models do.
    """
    model.to(dtype)
    keep = getattr(model, "_keep_in_fp32_modules", None) or []
    if dtype == torch.float32 or not keep:
        return
    for name, parameter in model.named_parameters():
        if any(part in keep for part in name.split(".")):
            parameter.data = parameter.data.to(torch.float32)


def _finish(dtype, modules: dict, keep_float32: tuple[str, ...] = ()) -> None:
    """Cast as from_pretrained(torch_dtype=dtype) would, but for the modules served in float32; eval mode."""
    for name, module in modules.items():
        if dtype is not None and name not in keep_float32:
            cast_like_from_pretrained(module, dtype)
        # Freshly built modules are in training mode, with dropout on.
        module.eval()


# -- CogVideoX ------------------------------------------------------------------

# CogVideoX's causal 3D VAEs: four blocks, three spatial downsamples (8x), 4x in time.
COGVIDEOX_VAE_BLOCKS = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("CogVideoXDownBlock3D",) * 4,
    up_block_types=("CogVideoXUpBlock3D",) * 4,
    temporal_compression_ratio=4,
)
TINY_COGVIDEOX_VAE = dict(block_out_channels=(8, 8, 8, 8), latent_channels=4, layers_per_block=1, norm_num_groups=2)
# Two blocks: diffusers' first-block cache needs a head and a tail.
TINY_COGVIDEOX_TRANSFORMER = dict(
    num_attention_heads=4, attention_head_dim=8, time_embed_dim=2, text_embed_dim=32, num_layers=2,
    sample_width=30, sample_height=20, sample_frames=9, patch_size=2, max_text_seq_length=32,
)
COGVIDEOX_2B_TRANSFORMER = dict(
    num_attention_heads=30, attention_head_dim=64, time_embed_dim=512, text_embed_dim=4096, num_layers=30,
    sample_width=90, sample_height=60, sample_frames=49, patch_size=2, max_text_seq_length=226,
    spatial_interpolation_scale=1.875, use_rotary_positional_embeddings=False,
)

# CogVideoX-2b's and 5b's.
COGVIDEOX_VAE = dict(block_out_channels=(128, 256, 256, 512), latent_channels=16, layers_per_block=3, norm_num_groups=32)

COGVIDEOX_SIZES = {
    "tiny": Size(transformer=TINY_COGVIDEOX_TRANSFORMER, vae=TINY_COGVIDEOX_VAE),
    # THUDM/CogVideoX-2b, served in fp16.
    "2b": Size(
        text_encoder=T5_XXL, transformer=COGVIDEOX_2B_TRANSFORMER, vae=COGVIDEOX_VAE, served_dtype=torch.float16
    ),
    # Rotary embeddings only, so the tiny one takes any size; the real
    # model's learned position embeddings fix it to 720x480 (its spec says
    # so). Rotary embeddings split a head 4:6:6 over time, height and width: 16 wide.
    "tiny-i2v": Size(
        transformer=dict(
            TINY_COGVIDEOX_TRANSFORMER, num_attention_heads=2, attention_head_dim=16,
            use_rotary_positional_embeddings=True,
        ),
        vae=TINY_COGVIDEOX_VAE,
        image_to_video=True,
    ),
    # THUDM/CogVideoX-5b-I2V, served in bf16.
    "5b-i2v": Size(
        text_encoder=T5_XXL,
        transformer=dict(
            COGVIDEOX_2B_TRANSFORMER, num_attention_heads=48, num_layers=42, use_rotary_positional_embeddings=True,
            use_learned_positional_embeddings=True,
        ),
        vae=COGVIDEOX_VAE,
        served_dtype=torch.bfloat16,
        image_to_video=True,
    ),
}


def build_cogvideox(size: Size, *, device: str | None = None, dtype=None, seed: int = 0):
    """
    CogVideoXPipeline (DDIM scheduler, as CogVideoX-2b ships), or for
    image_to_video CogVideoXImageToVideoPipeline: the first frame's VAE
    latents concatenated to the noise on channels (twice the latent
    channels in), DPM scheduler as CogVideoX-5b ships.
    """
    device, dtype = _build_target(size, device, dtype)
    tokenizer = build_tiny_tokenizer()
    latent_channels = size.vae["latent_channels"]
    # The weights come from a fixed seed so every worker process builds the
    # same model and a job's seed alone decides its frames. fork_rng keeps
    # the caller's global RNG untouched.
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        text_encoder = T5EncoderModel(T5Config(**_text_encoder_config(size, tokenizer)))
        transformer = CogVideoXTransformer3DModel(
            **size.transformer,
            in_channels=(2 if size.image_to_video else 1) * latent_channels,
            out_channels=latent_channels,
            temporal_compression_ratio=4,
        )
        vae = AutoencoderKLCogVideoX(**COGVIDEOX_VAE_BLOCKS, **size.vae)
    modules = dict(text_encoder=text_encoder, transformer=transformer, vae=vae)
    _finish(dtype, modules)
    if size.image_to_video:
        return CogVideoXImageToVideoPipeline(
            tokenizer=tokenizer, scheduler=CogVideoXDPMScheduler(timestep_spacing="trailing"), **modules
        )
    return CogVideoXPipeline(tokenizer=tokenizer, scheduler=CogVideoXDDIMScheduler(), **modules)


# -- Wan ------------------------------------------------------------------------

TINY_WAN_TRANSFORMER = dict(
    patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, text_dim=32, freq_dim=256, ffn_dim=32,
    num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
)
# Wan 2.1 14B's transformer; the 1.3B and Wan 2.2's 5B differ in heads, feed-forward and layers.
WAN_14B_TRANSFORMER = dict(
    patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, text_dim=4096, freq_dim=256,
    ffn_dim=13824, num_layers=40, cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6,
    rope_max_seq_len=1024,
)
# Wan 2.1's VAE (8x, 4x in time), scaled down; the published one is the class's default.
TINY_WAN_VAE = dict(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True])
# A CLIP vision tower: 32x32 pixels in 8x8 patches, 17 tokens of 16.
TINY_CLIP_VISION = dict(
    hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8,
    projection_dim=16,
)
# open_clip's ViT-H/14 vision tower, Wan 2.1 I2V's image_encoder (257 tokens of 1280).
CLIP_VIT_H_14 = dict(
    hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16, image_size=224,
    patch_size=14, projection_dim=1024, hidden_act="gelu", layer_norm_eps=1e-5,
)


# Wan 2.2's VAE: 16x spatial compression to 48 channels, with 2x2 pixel
# patches in front (12 channels in). The statistics are the model's own
# length; their values only scale the latents, so zeros and ones will do.
def _wan22_vae(base_dim: int, decoder_base_dim: int, z_dim: int, dim_mult: list, num_res_blocks: int) -> dict:
    return dict(
        base_dim=base_dim, decoder_base_dim=decoder_base_dim, z_dim=z_dim, dim_mult=dim_mult,
        num_res_blocks=num_res_blocks, temperal_downsample=[False, True, True], is_residual=True, in_channels=12,
        out_channels=12, patch_size=2, scale_factor_spatial=16, scale_factor_temporal=4,
        latents_mean=[0.0] * z_dim, latents_std=[1.0] * z_dim,
    )


WAN_SIZES = {
    "tiny": Size(transformer=TINY_WAN_TRANSFORMER, vae=TINY_WAN_VAE),
    # Wan-AI/Wan2.1-T2V-1.3B-Diffusers.
    "1.3b": Size(
        text_encoder=UMT5_XXL,
        transformer=dict(WAN_14B_TRANSFORMER, num_attention_heads=12, ffn_dim=8960, num_layers=30),
        vae={},
        served_dtype=torch.bfloat16,
    ),
    "tiny-i2v": Size(transformer=TINY_WAN_TRANSFORMER, vae=TINY_WAN_VAE, image_encoder=TINY_CLIP_VISION),
    "tiny-flf2v": Size(
        transformer=TINY_WAN_TRANSFORMER, vae=TINY_WAN_VAE, image_encoder=TINY_CLIP_VISION, first_last_frame=True
    ),
    # Wan-AI/Wan2.1-I2V-14B-480P-Diffusers (and FLF2V-14B-720P: the same, plus first_last_frame).
    "14b-i2v": Size(
        text_encoder=UMT5_XXL, transformer=WAN_14B_TRANSFORMER, vae={}, image_encoder=CLIP_VIT_H_14,
        served_dtype=torch.bfloat16,
    ),
    # Wan 2.2 TI2V: its 16x VAE, UniPC with flow shift 5, a timestep per latent frame.
    "tiny-ti2v": Size(
        transformer=TINY_WAN_TRANSFORMER,
        vae=_wan22_vae(base_dim=4, decoder_base_dim=4, z_dim=8, dim_mult=[1, 1, 1, 1], num_res_blocks=1),
        flow_shift=5.0,
        expand_timesteps=True,
    ),
    # Wan-AI/Wan2.2-TI2V-5B-Diffusers.
    "5b-ti2v": Size(
        text_encoder=UMT5_XXL,
        transformer=dict(WAN_14B_TRANSFORMER, num_attention_heads=24, ffn_dim=14336, num_layers=30),
        vae=_wan22_vae(base_dim=160, decoder_base_dim=256, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2),
        served_dtype=torch.bfloat16,
        flow_shift=5.0,
        expand_timesteps=True,
    ),
}


def _image_tokens(image_encoder: dict) -> int:
    return (image_encoder["image_size"] // image_encoder["patch_size"]) ** 2 + 1


def build_wan(size: Size, *, device: str | None = None, dtype=None, seed: int = 0):
    """
    WanPipeline (UniPC on flow-matching sigmas, as Wan ships), the VAE left
    in float32 as Wan serves it. Wan 2.2 TI2V is one of these, with
    expand_timesteps (each latent frame has its own timestep; the first is
    held clean when an image is given); its image mode is
    WanImageToVideoPipeline on the same modules (ModelSpec.image_pipeline_class).

    With an image_encoder, Wan 2.1 image to video: WanImageToVideoPipeline
    with a CLIP image encoder whose penultimate hidden states the
    transformer cross-attends to, and the first frame's latents (with a
    mask) beside the noise: 16 + 4 + 16 input channels. With
    first_last_frame, the FLF2V variant: the transformer takes both frames'
    CLIP tokens with a learned position embedding for each
    (pos_embed_seq_len), and can only be given two frames.
    """
    device, dtype = _build_target(size, device, dtype)
    tokenizer = build_tiny_tokenizer()
    vision = size.image_encoder
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        text_encoder = UMT5EncoderModel(UMT5Config(**_text_encoder_config(size, tokenizer)))
        vae = AutoencoderKLWan(**size.vae)
        z_dim = vae.config.z_dim
        if vision is None:
            transformer = WanTransformer3DModel(**size.transformer, in_channels=z_dim, out_channels=z_dim)
        else:
            heads, head_dim = size.transformer["num_attention_heads"], size.transformer["attention_head_dim"]
            transformer = WanTransformer3DModel(
                **size.transformer,
                in_channels=z_dim + vae.config.scale_factor_temporal + z_dim,
                out_channels=z_dim,
                image_dim=vision["hidden_size"],
                added_kv_proj_dim=heads * head_dim,
                pos_embed_seq_len=2 * _image_tokens(vision) if size.first_last_frame else None,
            )
            image_encoder = CLIPVisionModel(CLIPVisionConfig(**vision))
    modules = dict(text_encoder=text_encoder, transformer=transformer, vae=vae)
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=size.flow_shift
    )
    if vision is None:
        _finish(dtype, modules, keep_float32=("vae",))
        return WanPipeline(
            tokenizer=tokenizer, scheduler=scheduler, expand_timesteps=size.expand_timesteps, **modules
        )
    modules["image_encoder"] = image_encoder
    _finish(dtype, modules, keep_float32=("vae",))
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": vision["image_size"]},
        crop_size={"height": vision["image_size"], "width": vision["image_size"]},
    )
    return WanImageToVideoPipeline(tokenizer=tokenizer, scheduler=scheduler, image_processor=image_processor, **modules)


# -- what ModelSpec.builder names -------------------------------------------------
# A family's builder with one of its sizes. Full-size twins default to the
# GPU in their served dtype; tests build them on the meta device.

build_tiny_cogvideox = partial(build_cogvideox, COGVIDEOX_SIZES["tiny"])
build_random_cogvideox_2b = partial(build_cogvideox, COGVIDEOX_SIZES["2b"])
build_tiny_cogvideox_i2v = partial(build_cogvideox, COGVIDEOX_SIZES["tiny-i2v"])
build_random_cogvideox_5b_i2v = partial(build_cogvideox, COGVIDEOX_SIZES["5b-i2v"])
build_tiny_wan = partial(build_wan, WAN_SIZES["tiny"])
build_random_wan_1_3b = partial(build_wan, WAN_SIZES["1.3b"])
build_tiny_wan_i2v = partial(build_wan, WAN_SIZES["tiny-i2v"])
build_tiny_wan_flf2v = partial(build_wan, WAN_SIZES["tiny-flf2v"])
build_random_wan_i2v_14b = partial(build_wan, WAN_SIZES["14b-i2v"])
build_tiny_wan_ti2v = partial(build_wan, WAN_SIZES["tiny-ti2v"])
build_random_wan_ti2v_5b = partial(build_wan, WAN_SIZES["5b-ti2v"])
