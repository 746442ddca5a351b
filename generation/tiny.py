"""
`tiny-random`: a real CogVideoXPipeline whose components are built from small
configs with random weights, offline, the way diffusers' own tests build
dummy components. Every stage runs for real (tokenizer, T5 encoder, 3D
transformer, DDIM scheduler, causal 3D VAE); only the weights are random.
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
        text_encoder = T5EncoderModel(
            T5Config(
                vocab_size=len(tokenizer),
                d_model=32,
                d_kv=8,
                d_ff=64,
                num_layers=2,
                num_heads=4,
                relative_attention_num_buckets=8,
                decoder_start_token_id=0,
            )
        )
        transformer = CogVideoXTransformer3DModel(
            num_attention_heads=4,
            attention_head_dim=8,
            in_channels=4,
            out_channels=4,
            time_embed_dim=2,
            text_embed_dim=32,
            num_layers=1,
            sample_width=30,
            sample_height=20,
            sample_frames=9,
            patch_size=2,
            temporal_compression_ratio=4,
            max_text_seq_length=32,
        )
        # Four blocks: three spatial downsamples, so 8x spatial and 4x
        # temporal compression like the real CogVideoX VAE. With fewer, the
        # transformer would denoise at near pixel resolution and crawl.
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
