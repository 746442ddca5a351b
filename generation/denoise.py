"""
The denoising loop of each pipeline family the engine serves, owned here so
that a run can stop at a step boundary, save its state, and continue from it
with the same frames as a run that never stopped.

diffusers' own __call__ cannot resume: `latents=` is taken as starting noise
and the whole schedule runs again, and CogVideoX's DPM path keeps
old_pred_original_sample as a loop local. So each family below does what its
pipeline's __call__ does (diffusers 0.42: the same helpers, in the same
order, with the same arguments), with the loop split into steps: prepare
(encode the prompt, set the timesteps, draw the latents, encode the images),
step(i), decode. tests/generation/test_resume.py holds each family to the
plain pipeline call, frame for frame.

A state is everything the loop changes: the latents, every attribute of the
scheduler (its step index and multistep history), the generator's state and
the loop's own locals. torch and diffusers are imported inside, as in
pipelines.py.
"""

import io

# Bumped when the layout of a saved state changes: an older one is refused.
STATE_FORMAT = 1


class Family:
    """One pipeline run, split so that the loop can stop and go on: prepare in __init__, then step(i), decode()."""

    # The loop's own variables besides the latents, saved with them.
    loop_locals: tuple[str, ...] = ()

    def __init__(self, pipeline, call: dict):
        self.pipeline = pipeline
        self.call = call
        self.generator = call["generator"]
        # Steps done: the caller's count, saved with the state.
        self.done = 0

    @property
    def scheduler(self):
        return self.pipeline.scheduler

    def capture(self) -> dict:
        """The loop's state now, on the CPU: the caller serializes it (state_bytes)."""
        return {
            "latents": _to_cpu(self.latents),
            # Serialized at once by the caller, so CPU tensors need no copy.
            "scheduler": _to_cpu(_scheduler_state(self.scheduler)),
            "generator": self.generator.get_state(),
            "loop": _to_cpu({name: getattr(self, name) for name in self.loop_locals}),
        }

    def restore(self, state: dict) -> None:
        """Put a captured state back, each tensor on the device its counterpart lives on in this run."""
        device = self.latents.device
        if tuple(state["latents"].shape) != tuple(self.latents.shape):
            raise ValueError(f"latents of shape {tuple(state['latents'].shape)}, not {tuple(self.latents.shape)}")
        self.latents = state["latents"].to(device=device, dtype=self.latents.dtype)
        current = _scheduler_state(self.scheduler)
        for name, value in state["scheduler"].items():
            here = current.get(name)
            target = here.device if _is_tensor(here) else device
            setattr(self.scheduler, name, _to_device(value, target))
        self.generator.set_state(state["generator"])
        for name, value in state["loop"].items():
            setattr(self, name, _to_device(value, device))


class CogVideoX(Family):
    """CogVideoXPipeline and CogVideoXImageToVideoPipeline (the image's latents join each step's input)."""

    loop_locals = ("old_pred_original_sample",)

    def __init__(self, pipeline, call: dict):
        import torch
        from diffusers.pipelines.cogvideo.pipeline_cogvideox import retrieve_timesteps

        super().__init__(pipeline, call)
        p = pipeline
        self.image = call.get("image")
        height, width, num_frames = call["height"], call["width"], call["num_frames"]
        guidance_scale = call["guidance_scale"]
        if self.image is None:
            p.check_inputs(call["prompt"], height, width, call["negative_prompt"], ["latents"], None, None)
        else:
            p.check_inputs(self.image, call["prompt"], height, width, call["negative_prompt"], ["latents"])
        p._guidance_scale = guidance_scale
        p._attention_kwargs = None
        p._current_timestep = None
        p._interrupt = False
        device = p._execution_device
        self.cfg = guidance_scale > 1.0
        prompt_embeds, negative_prompt_embeds = p.encode_prompt(
            call["prompt"], call["negative_prompt"], self.cfg, num_videos_per_prompt=1,
            max_sequence_length=call["max_sequence_length"], device=device,
        )
        if self.cfg:
            prompt_embeds = torch.cat([negative_prompt_embeds, prompt_embeds], dim=0)
        self.prompt_embeds = prompt_embeds
        self.timesteps, self.num_inference_steps = retrieve_timesteps(
            p.scheduler, call["num_inference_steps"], device, None
        )
        p._num_timesteps = len(self.timesteps)
        latent_frames = (num_frames - 1) // p.vae_scale_factor_temporal + 1
        patch_size_t = p.transformer.config.patch_size_t
        self.additional_frames = 0
        if patch_size_t is not None and latent_frames % patch_size_t != 0:
            self.additional_frames = patch_size_t - latent_frames % patch_size_t
            num_frames += self.additional_frames * p.vae_scale_factor_temporal
        if self.image is None:
            self.latents = p.prepare_latents(
                1, p.transformer.config.in_channels, num_frames, height, width, prompt_embeds.dtype, device,
                self.generator, None,
            )
            self.image_latents = None
        else:
            image = p.video_processor.preprocess(self.image, height=height, width=width).to(
                device, dtype=prompt_embeds.dtype
            )
            self.latents, self.image_latents = p.prepare_latents(
                image, 1, p.transformer.config.in_channels // 2, num_frames, height, width, prompt_embeds.dtype,
                device, self.generator, None,
            )
        self.extra_step_kwargs = p.prepare_extra_step_kwargs(self.generator, 0.0)
        self.image_rotary_emb = (
            p._prepare_rotary_positional_embeddings(height, width, self.latents.size(1), device)
            if p.transformer.config.use_rotary_positional_embeddings
            else None
        )
        self.ofs_emb = None
        if self.image is not None and p.transformer.config.ofs_embed_dim is not None:
            self.ofs_emb = self.latents.new_full((1,), fill_value=2.0)
        self.old_pred_original_sample = None

    def step(self, i: int) -> None:
        import torch
        from diffusers import CogVideoXDPMScheduler

        p = self.pipeline
        t = self.timesteps[i]
        p._current_timestep = t
        latents = self.latents
        latent_model_input = torch.cat([latents] * 2) if self.cfg else latents
        latent_model_input = p.scheduler.scale_model_input(latent_model_input, t)
        extra = {}
        if self.image_latents is not None:
            latent_image_input = torch.cat([self.image_latents] * 2) if self.cfg else self.image_latents
            latent_model_input = torch.cat([latent_model_input, latent_image_input], dim=2)
            extra = {"ofs": self.ofs_emb}
        timestep = t.expand(latent_model_input.shape[0])
        with p.transformer.cache_context("cond_uncond"):
            noise_pred = p.transformer(
                hidden_states=latent_model_input,
                encoder_hidden_states=self.prompt_embeds,
                timestep=timestep,
                **extra,
                image_rotary_emb=self.image_rotary_emb,
                attention_kwargs=None,
                return_dict=False,
            )[0]
        noise_pred = noise_pred.float()
        if self.cfg:
            noise_pred_uncond, noise_pred_text = noise_pred.chunk(2)
            noise_pred = noise_pred_uncond + p.guidance_scale * (noise_pred_text - noise_pred_uncond)
        if not isinstance(p.scheduler, CogVideoXDPMScheduler):
            latents = p.scheduler.step(noise_pred, t, latents, **self.extra_step_kwargs, return_dict=False)[0]
        else:
            latents, self.old_pred_original_sample = p.scheduler.step(
                noise_pred,
                self.old_pred_original_sample,
                t,
                self.timesteps[i - 1] if i > 0 else None,
                latents,
                **self.extra_step_kwargs,
                return_dict=False,
            )
        self.latents = latents.to(self.prompt_embeds.dtype)

    def decode(self):
        p = self.pipeline
        p._current_timestep = None
        latents = self.latents[:, self.additional_frames:]
        video = p.decode_latents(latents)
        return p.video_processor.postprocess_video(video=video, output_type="np")


class Wan(Family):
    """WanPipeline and WanImageToVideoPipeline: Wan 2.1, its first-last-frame model, Wan 2.2's expand_timesteps."""

    def __init__(self, pipeline, call: dict):
        import torch

        super().__init__(pipeline, call)
        p = pipeline
        self.image = call.get("image")
        last_image = call.get("last_image")
        height, width, num_frames = call["height"], call["width"], call["num_frames"]
        guidance_scale = call["guidance_scale"]
        if self.image is None:
            p.check_inputs(call["prompt"], call["negative_prompt"], height, width, None, None, ["latents"], None)
        else:
            p.check_inputs(
                call["prompt"], call["negative_prompt"], self.image, height, width, None, None, None, ["latents"], None
            )
        if num_frames % p.vae_scale_factor_temporal != 1:
            num_frames = num_frames // p.vae_scale_factor_temporal * p.vae_scale_factor_temporal + 1
        num_frames = max(num_frames, 1)
        transformer = p.transformer if p.transformer is not None else p.transformer_2
        patch_size = transformer.config.patch_size
        h_multiple_of = p.vae_scale_factor_spatial * patch_size[1]
        w_multiple_of = p.vae_scale_factor_spatial * patch_size[2]
        height, width = height // h_multiple_of * h_multiple_of, width // w_multiple_of * w_multiple_of
        self.guidance_scale = guidance_scale
        self.guidance_scale_2 = guidance_scale if p.config.boundary_ratio is not None else None
        p._guidance_scale = guidance_scale
        p._guidance_scale_2 = self.guidance_scale_2
        p._attention_kwargs = None
        p._current_timestep = None
        p._interrupt = False
        device = p._execution_device
        self.device = device
        prompt_embeds, negative_prompt_embeds = p.encode_prompt(
            prompt=call["prompt"],
            negative_prompt=call["negative_prompt"],
            do_classifier_free_guidance=p.do_classifier_free_guidance,
            num_videos_per_prompt=1,
            max_sequence_length=call["max_sequence_length"],
            device=device,
        )
        self.transformer_dtype = transformer.dtype
        self.prompt_embeds = prompt_embeds.to(self.transformer_dtype)
        self.negative_prompt_embeds = None
        if negative_prompt_embeds is not None:
            self.negative_prompt_embeds = negative_prompt_embeds.to(self.transformer_dtype)
        self.image_embeds = None
        if self.image is not None and p.transformer is not None and p.transformer.config.image_dim is not None:
            images = self.image if last_image is None else [self.image, last_image]
            self.image_embeds = p.encode_image(images, device).repeat(1, 1, 1).to(self.transformer_dtype)
        p.scheduler.set_timesteps(call["num_inference_steps"], device=device)
        self.timesteps = p.scheduler.timesteps
        self.condition = None
        self.first_frame_mask = None
        if self.image is None:
            self.latents = p.prepare_latents(
                1, transformer.config.in_channels, height, width, num_frames, torch.float32, device,
                self.generator, None,
            )
            self.mask = torch.ones(self.latents.shape, dtype=torch.float32, device=device)
            # WanPipeline sets it (no DtoH sync); the image pipeline does not, and then finds it at its first step.
            p.scheduler.set_begin_index(0)
        else:
            image = p.video_processor.preprocess(self.image, height=height, width=width).to(device, dtype=torch.float32)
            if last_image is not None:
                last_image = p.video_processor.preprocess(last_image, height=height, width=width).to(
                    device, dtype=torch.float32
                )
            outputs = p.prepare_latents(
                image, 1, p.vae.config.z_dim, height, width, num_frames, torch.float32, device, self.generator, None,
                last_image,
            )
            if p.config.expand_timesteps:
                self.latents, self.condition, self.first_frame_mask = outputs
            else:
                self.latents, self.condition = outputs
        p._num_timesteps = len(self.timesteps)
        self.boundary_timestep = None
        if p.config.boundary_ratio is not None:
            self.boundary_timestep = p.config.boundary_ratio * p.scheduler.config.num_train_timesteps

    def step(self, i: int) -> None:
        import torch

        p = self.pipeline
        t = self.timesteps[i]
        p._current_timestep = t
        latents = self.latents
        if self.boundary_timestep is None or t >= self.boundary_timestep:
            model, guidance_scale = p.transformer, self.guidance_scale
        else:
            model, guidance_scale = p.transformer_2, self.guidance_scale_2
        if self.image is None:
            latent_model_input = latents.to(self.transformer_dtype)
            mask = self.mask
            cache_kwargs = {"step_index": i, "sigma": float(p.scheduler.sigmas[i]), "num_inference_steps": len(self.timesteps)}
        elif p.config.expand_timesteps:
            mask = self.first_frame_mask
            latent_model_input = ((1 - mask) * self.condition + mask * latents).to(self.transformer_dtype)
            cache_kwargs = {}
        else:
            mask = None
            latent_model_input = torch.cat([latents, self.condition], dim=1).to(self.transformer_dtype)
            cache_kwargs = {}
        if p.config.expand_timesteps:
            timestep = (mask[0][0][:, ::2, ::2] * t).flatten().unsqueeze(0).expand(latents.shape[0], -1)
        else:
            timestep = t.expand(latents.shape[0])
        image_kwargs = {} if self.image is None else {"encoder_hidden_states_image": self.image_embeds}

        def predict(context: str, prompt_embeds):
            with model.cache_context(context, **cache_kwargs):
                return model(
                    hidden_states=latent_model_input,
                    timestep=timestep,
                    encoder_hidden_states=prompt_embeds,
                    **image_kwargs,
                    attention_kwargs=None,
                    return_dict=False,
                )[0]

        noise_pred = predict("cond", self.prompt_embeds)
        if p.do_classifier_free_guidance:
            noise_uncond = predict("uncond", self.negative_prompt_embeds)
            noise_pred = noise_uncond + guidance_scale * (noise_pred - noise_uncond)
        self.latents = p.scheduler.step(noise_pred, t, latents, return_dict=False)[0]

    def decode(self):
        import torch
        from diffusers.utils.torch_utils import get_module_execution_device

        p = self.pipeline
        p._current_timestep = None
        latents = self.latents
        if self.first_frame_mask is not None:
            latents = (1 - self.first_frame_mask) * self.condition + self.first_frame_mask * latents
        latents = latents.to(get_module_execution_device(p.vae), dtype=p.vae.dtype)
        z_dim = p.vae.config.z_dim
        latents_mean = torch.tensor(p.vae.config.latents_mean).view(1, z_dim, 1, 1, 1).to(latents.device, latents.dtype)
        latents_std = 1.0 / torch.tensor(p.vae.config.latents_std).view(1, z_dim, 1, 1, 1).to(
            latents.device, latents.dtype
        )
        latents = latents / latents_std + latents_mean
        video = p.vae.decode(latents, return_dict=False)[0]
        return p.video_processor.postprocess_video(video, output_type="np")


FAMILIES = {
    "CogVideoXPipeline": CogVideoX,
    "CogVideoXImageToVideoPipeline": CogVideoX,
    "WanPipeline": Wan,
    "WanImageToVideoPipeline": Wan,
}


def family_for(pipeline) -> type[Family]:
    try:
        return FAMILIES[type(pipeline).__name__]
    except KeyError:
        raise NotImplementedError(f"no denoising loop for {type(pipeline).__name__}") from None


def _scheduler_state(scheduler) -> dict:
    # Its config is fixed at construction and fingerprinted; everything else may change while it steps.
    return {name: value for name, value in vars(scheduler).items() if name not in ("config", "_internal_dict")}


def _is_tensor(value) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


def _to_cpu(value):
    return _to_device(value, "cpu")


def _to_device(value, device):
    if _is_tensor(value):
        return value.to(device)
    if isinstance(value, list):
        return [_to_device(item, device) for item in value]
    if isinstance(value, tuple):
        return tuple(_to_device(item, device) for item in value)
    if isinstance(value, dict):
        return {name: _to_device(item, device) for name, item in value.items()}
    return value


def state_bytes(state: dict) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def state_from_bytes(data: bytes) -> dict:
    import torch

    # weights_only=False: numpy arrays and scalars among a scheduler's attributes; the bytes are this
    # deployment's own, from its own storage, like the model weights.
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)


def run_steps(family: Family, start: int, on_step_end) -> None:
    """Steps start.. to the end; on_step_end(done) after each, which may raise to stop."""
    for i in range(start, len(family.timesteps)):
        family.step(i)
        on_step_end(i + 1)

