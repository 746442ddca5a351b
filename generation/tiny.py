"""
`tiny-random` and `tiny-random-wan`: real CogVideoXPipeline and WanPipeline
objects whose components are built from small configs with random weights,
offline, the way diffusers' own tests build dummy components. Every stage
runs for real (tokenizer, T5 encoder, 3D transformer, scheduler, causal 3D
VAE); only the weights are random. Both VAEs keep the real models' 8x spatial
and 4x temporal compression, or the denoiser would work at near pixel
resolution and crawl.
"""

import string

import torch

# Enough pieces that ordinary English prompts tokenize to words, not <unk>.
_WORDS = (
    "a an the of and in on with at to over under by from into near through "
    "sunset sunrise mountain mountains city night day cat dog bird fish horse "
    "running walking flying swimming water sea ocean river sky cloud clouds "
    "red blue green yellow black white golden beautiful slow fast camera view "
    "forest tree trees street car people person man woman child light dark"
).split()


def build_tiny_tokenizer():
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [("\u2581" + word, -float(rank + 1)) for rank, word in enumerate(_WORDS)]
    # Single characters last, with low scores, so any word still splits into
    # known pieces instead of one <unk>.
    vocab += [("\u2581", -90.0)]
    vocab += [(char, -100.0) for char in string.ascii_letters + string.digits + string.punctuation]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def tiny_text_encoder_config(tokenizer) -> dict:
    """A two-layer T5 encoder with 32-wide embeddings (the tiny transformers' text_dim)."""
    return dict(
        vocab_size=len(tokenizer),
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
    )


def build_tiny_cogvideox(seed: int = 0):
    from diffusers import (
        AutoencoderKLCogVideoX,
        CogVideoXDDIMScheduler,
        CogVideoXPipeline,
        CogVideoXTransformer3DModel,
    )
    from transformers import T5Config, T5EncoderModel

    # The weights come from a fixed seed so every worker process builds the
    # same model and a job's seed alone decides its frames. fork_rng keeps
    # the caller's global RNG untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tokenizer = build_tiny_tokenizer()
        text_encoder = T5EncoderModel(T5Config(**tiny_text_encoder_config(tokenizer)))
        transformer = CogVideoXTransformer3DModel(
            num_attention_heads=4,
            attention_head_dim=8,
            in_channels=4,
            out_channels=4,
            time_embed_dim=2,
            text_embed_dim=32,
            # Two blocks: diffusers' first-block cache needs a head and a tail.
            num_layers=2,
            sample_width=30,
            sample_height=20,
            sample_frames=9,
            patch_size=2,
            temporal_compression_ratio=4,
            max_text_seq_length=32,
        )
        # Four blocks: three spatial downsamples, 8x like the real VAE.
        vae = AutoencoderKLCogVideoX(
            in_channels=3,
            out_channels=3,
            down_block_types=("CogVideoXDownBlock3D",) * 4,
            up_block_types=("CogVideoXUpBlock3D",) * 4,
            block_out_channels=(8, 8, 8, 8),
            latent_channels=4,
            layers_per_block=1,
            norm_num_groups=2,
            temporal_compression_ratio=4,
        )
        scheduler = CogVideoXDDIMScheduler()
    # Freshly built modules are in training mode, with dropout on.
    for module in (text_encoder, transformer, vae):
        module.eval()
    return CogVideoXPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        transformer=transformer,
        vae=vae,
        scheduler=scheduler,
    )


def build_tiny_wan(seed: int = 0):
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tokenizer = build_tiny_tokenizer()
        text_encoder = UMT5EncoderModel(UMT5Config(**tiny_text_encoder_config(tokenizer)))
        vae = AutoencoderKLWan(
            base_dim=3,
            z_dim=16,
            dim_mult=[1, 1, 1, 1],
            num_res_blocks=1,
            temperal_downsample=[False, True, True],
        )
        transformer = WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=2,
            attention_head_dim=12,
            in_channels=16,
            out_channels=16,
            text_dim=32,
            freq_dim=256,
            ffn_dim=32,
            num_layers=2,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            rope_max_seq_len=32,
        )
        # Wan 2.1's own scheduler: UniPC on flow-matching sigmas.
        scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    for module in (text_encoder, transformer, vae):
        module.eval()
    return WanPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler
    )


def _random_build_target(device: str | None, dtype) -> tuple[str, "torch.dtype"]:
    """Full-size random models are built on the GPU, where initialisation takes seconds instead of minutes."""
    if device is None:
        if not torch.cuda.is_available():
            raise RuntimeError("full-size random models need a GPU: in float32 on a CPU they would take 20-30 GB")
        device = "cuda"
    if dtype is None:
        dtype = torch.float16 if device.startswith("cuda") else torch.float32
    return device, dtype


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


def build_random_cogvideox_2b(device: str | None = None, dtype=None):
    """
    CogVideoX-2b's published architecture (transformer, VAE, T5-XXL encoder)
    with random weights: it runs at the real model's speed and memory, for
    benchmarks on a GPU without downloading 13 GB. fp16 unless told otherwise,
    as the real model is served.
    """
    from diffusers import (
        AutoencoderKLCogVideoX,
        CogVideoXDDIMScheduler,
        CogVideoXPipeline,
        CogVideoXTransformer3DModel,
    )
    from transformers import T5Config, T5EncoderModel

    device, dtype = _random_build_target(device, dtype)
    tokenizer = build_tiny_tokenizer()
    with torch.device(device):
        transformer = CogVideoXTransformer3DModel(
            num_attention_heads=30,
            attention_head_dim=64,
            in_channels=16,
            out_channels=16,
            time_embed_dim=512,
            text_embed_dim=4096,
            num_layers=30,
            sample_width=90,
            sample_height=60,
            sample_frames=49,
            patch_size=2,
            temporal_compression_ratio=4,
            max_text_seq_length=226,
            spatial_interpolation_scale=1.875,
            use_rotary_positional_embeddings=False,
        )
        vae = AutoencoderKLCogVideoX(
            in_channels=3,
            out_channels=3,
            down_block_types=("CogVideoXDownBlock3D",) * 4,
            up_block_types=("CogVideoXUpBlock3D",) * 4,
            block_out_channels=(128, 256, 256, 512),
            latent_channels=16,
            layers_per_block=3,
            norm_num_groups=32,
            temporal_compression_ratio=4,
        )
        # T5 v1.1 XXL's encoder; the vocabulary is the tiny one (the prompt's
        # tokens do not change the cost: it is padded to 226 either way).
        text_encoder = T5EncoderModel(
            T5Config(
                vocab_size=len(tokenizer),
                d_model=4096,
                d_kv=64,
                d_ff=10240,
                num_layers=24,
                num_heads=64,
                feed_forward_proj="gated-gelu",
            )
        )
    for module in (text_encoder, transformer, vae):
        cast_like_from_pretrained(module, dtype)
        module.eval()
    return CogVideoXPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        transformer=transformer,
        vae=vae,
        scheduler=CogVideoXDDIMScheduler(),
    )


def build_random_wan_1_3b(device: str | None = None, dtype=None):
    """
    Wan 2.1 T2V 1.3B's published architecture (Wan-AI/Wan2.1-T2V-1.3B-Diffusers:
    transformer, VAE, UMT5-XXL encoder) with random weights, for GPU
    benchmarks. bf16 unless told otherwise, with the VAE in float32 as the
    real model is served (it decodes badly in bf16).
    """
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    if dtype is None and (device or "cuda").startswith("cuda"):
        dtype = torch.bfloat16
    device, dtype = _random_build_target(device, dtype)
    tokenizer = build_tiny_tokenizer()
    with torch.device(device):
        transformer = WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=12,
            attention_head_dim=128,
            in_channels=16,
            out_channels=16,
            text_dim=4096,
            freq_dim=256,
            ffn_dim=8960,
            num_layers=30,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            eps=1e-6,
            rope_max_seq_len=1024,
        )
        # The published VAE's configuration is the class's default.
        vae = AutoencoderKLWan().to(torch.float32)
        text_encoder = UMT5EncoderModel(
            UMT5Config(
                vocab_size=len(tokenizer),
                d_model=4096,
                d_kv=64,
                d_ff=10240,
                num_layers=24,
                num_heads=64,
                relative_attention_num_buckets=32,
                feed_forward_proj="gated-gelu",
            )
        )
    cast_like_from_pretrained(transformer, dtype)
    cast_like_from_pretrained(text_encoder, dtype)
    for module in (text_encoder, transformer, vae):
        module.eval()
    return WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        transformer=transformer,
        scheduler=UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0),
    )
