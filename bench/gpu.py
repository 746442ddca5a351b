"""
The engine on a GPU at full size: CogVideoX-2b at 720x480x49 and Wan 2.1
1.3B at 832x480x81, with the full architectures and random weights (same
compute and memory as the real weights, which cannot be downloaded here).

    python3 -m bench.gpu                    # on a CUDA GPU: ~8 minutes, prints the tables
    .venv/bin/python -m bench.gpu --smoke   # on a CPU: the tiny models at tiny sizes, to check the script

What it measures, in order of importance (a section that would not finish
inside --budget seconds is skipped and said so):
1. Bare diffusers against the engine's path (generation.pipelines.generate_frames,
   with its per-step callback and frame conversion) on the same pipeline
   object and settings, interleaved: the ratio of their times.
2. The CUDA out-of-memory path for real: the card capped with
   torch.cuda.set_per_process_memory_fraction, a job too large for it fails
   with OutOfMemory, and the next job runs on the same warm pipeline.
3. Peak GPU memory against frames x height x width (6 points per model, one
   denoising step, then the VAE decode tiled and untiled): the admission table.
4. Each option's row: seconds per denoising step, VAE decode time, peak GPU
   memory: fp16/bf16, VAE tiling, CPU offload, first-block cache, TaylorSeer
   cache, torch.compile (regional: cold compile apart from warm).

Few steps are run (--steps, default 8); a 50-step job is extrapolated as
prep + 50 x s/step + decode, and the tables say so. Encoding to MP4 is timed
apart on a CPU (imageio-ffmpeg is not on the GPU machine). Writes each row
as a JSON line to $OUT/gpu.jsonl (or --out) as soon as it is measured.
"""

import argparse
import gc
import json
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from generation import pipelines
from generation.pipelines import GenerationParams, LoadOptions, OutOfMemory, generate_frames, load_pipeline
from generation.registry import BUILTIN_SPECS
from generation.tiny import cast_like_from_pretrained

SPECS = {spec.name: spec for spec in BUILTIN_SPECS}
PROMPT = "a golden retriever running through a field of flowers at sunset, slow camera pan"
GIB = 1024**3


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--budget", type=float, default=510.0, help="seconds for the whole script")
    parser.add_argument("--smoke", action="store_true", help="tiny models at tiny sizes on any device")
    parser.add_argument("--only", choices=["cogvideox", "wan"], help="one model family")
    parser.add_argument("--fastest", action="store_true", help="only whole 50-step jobs of the fastest settings")
    parser.add_argument(
        "--encode", action="store_true",
        help="only the MP4 + poster + preview encode of full-size frames, on this machine's CPU",
    )
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    return parser.parse_args()


class Bench:
    def __init__(self, args):
        self.args = args
        self.started = time.monotonic()
        self.cuda = torch.cuda.is_available()
        self.device = "cuda" if self.cuda else "cpu"
        self.out = Path(args.out) / "gpu.jsonl"
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict] = []

    # --- bookkeeping -------------------------------------------------------
    def left(self) -> float:
        return self.args.budget - (time.monotonic() - self.started)

    def has_time(self, what: str, estimate: float) -> bool:
        if estimate < self.left():
            return True
        print(f"  SKIPPED {what}: needs ~{estimate:.0f}s, {self.left():.0f}s left", flush=True)
        self.record({"section": "skipped", "what": what, "estimate_s": round(estimate, 1)})
        return False

    def record(self, row: dict) -> None:
        row = {"t": round(time.monotonic() - self.started, 1), **row}
        self.rows.append(row)
        with open(self.out, "a") as handle:
            handle.write(json.dumps(row) + "\n")

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.cuda:
            self.sync()
            torch.cuda.reset_peak_memory_stats()

    def peak(self) -> tuple[float, float]:
        if not self.cuda:
            return 0.0, 0.0
        self.sync()
        return torch.cuda.max_memory_allocated() / GIB, torch.cuda.max_memory_reserved() / GIB

    def resident(self) -> float:
        return torch.cuda.memory_allocated() / GIB if self.cuda else 0.0

    # --- runs ----------------------------------------------------------------
    def call(self, pipe, spec, *, width, height, frames, steps, output_type="np", timed_steps=True):
        """One pipeline call; returns (output, timings) with per-step times from a synchronising callback."""
        marks: list[float] = []

        def on_step(pipeline, index, timestep, kwargs):
            self.sync()
            marks.append(time.perf_counter())
            return kwargs

        self.reset_peak()
        started = time.perf_counter()
        output = pipe(
            prompt=PROMPT,
            width=width,
            height=height,
            num_frames=frames,
            num_inference_steps=steps,
            guidance_scale=spec.guidance_scale,
            generator=torch.Generator("cpu").manual_seed(0),
            output_type=output_type,
            max_sequence_length=spec.max_sequence_length,
            callback_on_step_end=on_step if timed_steps else None,
        )
        self.sync()
        ended = time.perf_counter()
        allocated, reserved = self.peak()
        timings = {"total_s": ended - started, "peak_allocated_gib": allocated, "peak_reserved_gib": reserved}
        if len(marks) >= 2:
            per_step = (marks[-1] - marks[0]) / (len(marks) - 1)
            timings.update(
                s_per_step=per_step,
                # Text encoding and latents, before the first step.
                prep_s=max(marks[0] - started - per_step, 0.0),
                # VAE decode and post-processing, after the last step.
                decode_s=ended - marks[-1],
            )
        return output, timings

    def option_row(self, family, name, pipe, spec, size, note="", steps=None):
        width, height, frames = size
        steps = steps or self.args.steps
        _, timings = self.call(pipe, spec, width=width, height=height, frames=frames, steps=steps)
        extrapolated = timings["prep_s"] + 50 * timings["s_per_step"] + timings["decode_s"]
        row = {
            "section": "options",
            "model": family,
            "setting": name,
            "size": f"{width}x{height}x{frames}",
            "steps": steps,
            "s_per_step": round(timings["s_per_step"], 4),
            "prep_s": round(timings["prep_s"], 2),
            "decode_s": round(timings["decode_s"], 2),
            "total_s": round(timings["total_s"], 2),
            "job_50_steps_s": round(extrapolated, 1),
            "peak_allocated_gib": round(timings["peak_allocated_gib"], 2),
            "peak_reserved_gib": round(timings["peak_reserved_gib"], 2),
            "note": note,
        }
        self.record(row)
        print(
            f"  {family:10} {name:28} {row['s_per_step']:7.3f} s/step  decode {row['decode_s']:6.2f}s  "
            f"prep {row['prep_s']:5.2f}s  peak {row['peak_allocated_gib']:6.2f}/{row['peak_reserved_gib']:6.2f} GiB  "
            f"~{extrapolated:6.1f}s at 50 steps {note}",
            flush=True,
        )
        return row

    def free(self) -> None:
        pipelines.release_pipelines()
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()


def decode(pipe, latents):
    if type(pipe).__name__ == "CogVideoXPipeline":
        return pipe.decode_latents(latents)
    return pipe.vae.decode(latents.to(pipe.vae.dtype), return_dict=False)[0]


def ratio_section(bench: Bench, spec, pipe, size) -> None:
    """Bare diffusers against generate_frames on the same pipeline, interleaved, warm."""
    width, height, frames = size
    steps = bench.args.steps
    params = GenerationParams(
        prompt=PROMPT, negative_prompt="", width=width, height=height, num_frames=frames,
        num_inference_steps=steps, guidance_scale=spec.guidance_scale, seed=0,
    )
    options = LoadOptions(device=bench.device)
    bare, engine = [], []
    for _ in range(2):
        _, timings = bench.call(pipe, spec, width=width, height=height, frames=frames, steps=steps, timed_steps=False)
        bare.append(timings["total_s"])
        bench.sync()
        started = time.perf_counter()
        generate_frames(spec, params, options=options, on_step=lambda done, total: True)
        bench.sync()
        engine.append(time.perf_counter() - started)
    row = {
        "section": "ratio",
        "model": spec.name,
        "size": f"{width}x{height}x{frames}",
        "steps": steps,
        "bare_s": [round(value, 3) for value in bare],
        "engine_s": [round(value, 3) for value in engine],
        "ratio": round(statistics.median(engine) / statistics.median(bare), 4),
    }
    bench.record(row)
    print(f"  bare {row['bare_s']} s, engine {row['engine_s']} s: engine/bare = {row['ratio']}", flush=True)


def out_of_memory_section(bench: Bench, spec, pipe, big, small) -> None:
    """A card capped a little above the weights: the big job fails as OutOfMemory, the next one runs warm."""
    if not bench.cuda:
        print("  (no CUDA: the out-of-memory path needs a GPU)")
        return
    total = torch.cuda.get_device_properties(0).total_memory / GIB
    cap = bench.resident() + 6.0
    # Cached blocks count against the cap: give them back first.
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(min(cap / total, 1.0))
    tiled = getattr(pipe.vae, "use_tiling", False)
    pipe.vae.disable_tiling()
    outcome = {"section": "out_of_memory", "model": spec.name, "cap_gib": round(cap, 1)}
    loaded_before = pipelines.loaded_models()
    try:
        width, height, frames = big
        generate_frames(
            spec,
            GenerationParams(PROMPT, "", width, height, frames, 2, spec.guidance_scale, 0),
            options=LoadOptions(device="cuda"),
        )
        outcome["big_job"] = "completed (did not run out of memory)"
    except OutOfMemory as exc:
        outcome["big_job"] = f"OutOfMemory: {str(exc)[:160]}"
    pipe.vae.enable_tiling()
    try:
        width, height, frames = small
        started = time.perf_counter()
        # Planned against the capped card: the engine tiles the VAE by itself.
        frames_out = generate_frames(
            spec,
            GenerationParams(PROMPT, "", width, height, frames, 2, spec.guidance_scale, 0),
            options=LoadOptions(device="cuda", gpu_memory_gib=cap),
        )
        outcome["next_job"] = f"completed: {tuple(frames_out.shape)} in {time.perf_counter() - started:.1f}s"
        outcome["same_warm_pipeline"] = pipelines.loaded_models() == loaded_before and load_pipeline(
            spec, LoadOptions(device="cuda")
        ) is pipe
    except Exception as exc:  # report, never crash the run
        outcome["next_job"] = f"FAILED: {type(exc).__name__}: {str(exc)[:160]}"
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        if not tiled:
            pipe.vae.disable_tiling()
        torch.cuda.empty_cache()
    bench.record(outcome)
    print(f"  {outcome}", flush=True)


def memory_section(bench: Bench, spec, pipe, sizes, both_decodes_from: int = 0) -> None:
    """
    Peak memory of one denoising step and of the decode at each size: the
    spec's own decode (tiled or not) everywhere, the other one from
    both_decodes_from voxels up (decodes are the slow part of a point).
    """
    vae = pipe.vae
    tiled_by_default = getattr(vae, "use_tiling", False)
    for width, height, frames in sizes:
        if not bench.has_time(f"{spec.name} memory point {width}x{height}x{frames}", 25):
            break
        output, timings = bench.call(
            pipe, spec, width=width, height=height, frames=frames, steps=1, output_type="latent", timed_steps=False
        )
        latents = output.frames
        row = {
            "section": "memory",
            "model": spec.name,
            "width": width,
            "height": height,
            "frames": frames,
            "voxels_m": round(width * height * frames / 1e6, 3),
            "resident_gib": round(bench.resident(), 2),
            "denoise_peak_gib": round(timings["peak_allocated_gib"], 2),
            "denoise_step_s": round(timings["total_s"], 2),
        }
        decodes = [("tiled", True), ("untiled", False)]
        if width * height * frames < both_decodes_from:
            decodes = [decode for decode in decodes if decode[1] == tiled_by_default]
        for label, tiling in decodes:
            vae.enable_tiling() if tiling else vae.disable_tiling()
            bench.reset_peak()
            started = time.perf_counter()
            try:
                with torch.inference_mode():
                    video = decode(pipe, latents)
                bench.sync()
                row[f"decode_{label}_s"] = round(time.perf_counter() - started, 2)
                row[f"decode_{label}_peak_gib"] = round(bench.peak()[0], 2)
                del video
            except torch.OutOfMemoryError:
                row[f"decode_{label}_peak_gib"] = "oom"
            gc.collect()
            if bench.cuda:
                torch.cuda.empty_cache()
        vae.enable_tiling() if tiled_by_default else vae.disable_tiling()
        del latents, output
        bench.record(row)
        print(
            f"  {spec.name} {width}x{height}x{frames}: resident {row['resident_gib']} GiB, denoise peak "
            f"{row['denoise_peak_gib']} GiB, decode tiled {row.get('decode_tiled_peak_gib')} GiB "
            f"({row.get('decode_tiled_s')}s), untiled {row.get('decode_untiled_peak_gib')} GiB "
            f"({row.get('decode_untiled_s')}s)",
            flush=True,
        )


def options_section(bench: Bench, family: str, spec, pipe, size, base_row) -> None:
    """Each memory/speed option on the same pipeline object, switched on and back off."""
    steps = base_row["steps"]

    def row(name, note=""):
        return bench.option_row(family, name, pipe, spec, size, note=note, steps=steps)

    one_run = base_row["total_s"] * 1.3 + 5
    vae = pipe.vae
    tiled = getattr(vae, "use_tiling", False)

    if bench.has_time(f"{family} VAE tiling toggled", one_run):
        vae.disable_tiling() if tiled else vae.enable_tiling()
        row("vae tiling " + ("off" if tiled else "on"))
        vae.enable_tiling() if tiled else vae.disable_tiling()
    if bench.has_time(f"{family} taylorseer", one_run):
        pipelines.enable_cache(pipe.transformer, "taylorseer_cache")
        row("taylorseer cache", note="(fixed schedule: weights do not matter)")
        pipe.transformer.disable_cache()
    if bench.has_time(f"{family} first-block cache", one_run):
        pipelines.enable_cache(pipe.transformer, "first_block_cache", 0.05)
        row("first-block cache 0.05", note="(skips depend on activations: random weights make this unrepresentative)")
        pipe.transformer.disable_cache()
    if bench.cuda and bench.has_time(f"{family} cpu offload", one_run * 3 + 20):
        pipe.enable_model_cpu_offload(device="cuda")
        row("model cpu offload")
        pipe.remove_all_hooks()
        pipe.to("cuda")
        torch.cuda.empty_cache()
    other = torch.bfloat16 if pipe.transformer.dtype == torch.float16 else torch.float16
    original = pipe.transformer.dtype
    # CogVideoX's pipeline hands latents to the VAE in the transformer's
    # dtype; Wan's casts them to the VAE's (kept in float32).
    cast = [pipe.transformer, pipe.text_encoder] + ([pipe.vae] if family == "cogvideox" else [])
    if bench.has_time(f"{family} {other}", one_run + 10):
        for module in cast:
            cast_like_from_pretrained(module, other)
        row(str(other).removeprefix("torch."))
        for module in cast:
            cast_like_from_pretrained(module, original)
        if bench.cuda:
            torch.cuda.empty_cache()
    if bench.has_time(f"{family} torch.compile (regional)", one_run * 2 + 90):
        started = time.perf_counter()
        pipelines.compile_transformer(pipe.transformer)
        _, cold = bench.call(pipe, spec, width=size[0], height=size[1], frames=size[2], steps=2, timed_steps=False)
        compile_row = {
            "section": "compile",
            "model": family,
            "cold_two_step_run_s": round(time.perf_counter() - started, 1),
            "note": "first run after compile_transformer: compilation plus 2 steps and a decode",
        }
        bench.record(compile_row)
        print(f"  {family} compile: cold 2-step run {compile_row['cold_two_step_run_s']}s", flush=True)
        if bench.has_time(f"{family} compiled warm run", one_run):
            row("torch.compile (regional), warm")


def build(bench: Bench, spec, size):
    started = time.perf_counter()
    pipe = load_pipeline(spec, LoadOptions(device=bench.device))
    bench.record({"section": "build", "model": spec.name, "build_s": round(time.perf_counter() - started, 1),
                  "resident_gib": round(bench.resident(), 2)})
    print(f"  built in {time.perf_counter() - started:.1f}s, {bench.resident():.2f} GiB resident", flush=True)
    # Warm-up: kernels, allocator, cuDNN choices.
    bench.call(pipe, spec, width=size[0], height=size[1], frames=size[2], steps=2, timed_steps=False)
    return pipe


def essentials(bench: Bench, family: str, spec, size, memory_sizes, oom_sizes, steps):
    """The spec's default row, the engine ratio, the out-of-memory path and the memory table."""
    print(f"\n== {spec.name} at {size[0]}x{size[1]}x{size[2]} on {bench.device} ==", flush=True)
    pipe = build(bench, spec, size)
    base = bench.option_row(family, "spec default", pipe, spec, size, steps=steps)
    if oom_sizes and bench.has_time(f"{family} bare vs engine", base["total_s"] * 4.5):
        ratio_section(bench, spec, pipe, size)
    if oom_sizes and bench.has_time(f"{family} out-of-memory path", base["total_s"] + 30):
        out_of_memory_section(bench, spec, pipe, *oom_sizes)
    # Both decodes at every CogVideoX point; Wan's decode is slow, so its
    # tiled decode only at the two largest.
    memory_section(bench, spec, pipe, memory_sizes, both_decodes_from=0 if family == "cogvideox" else 832 * 480 * 61)
    return pipe, base


def guarded(bench: Bench, what: str, work) -> None:
    # One section's failure must not cost the others' figures.
    try:
        work()
    except Exception as exc:
        import traceback

        traceback.print_exc()
        bench.record({"section": "error", "what": what, "error": f"{type(exc).__name__}: {exc}"[:500]})
def full_job(bench: Bench, family: str, spec, size, setting: str, steps: int = 50) -> None:
    """A whole job through the engine (generate_frames), every step run: no extrapolation."""
    width, height, frames = size
    params = GenerationParams(PROMPT, "", width, height, frames, steps, spec.guidance_scale, 0)
    bench.reset_peak()
    started = time.perf_counter()
    generate_frames(spec, params, options=LoadOptions(device=bench.device))
    bench.sync()
    elapsed = time.perf_counter() - started
    allocated, reserved = bench.peak()
    row = {
        "section": "full_job", "model": family, "setting": setting, "size": f"{width}x{height}x{frames}",
        "steps": steps, "total_s": round(elapsed, 2), "peak_allocated_gib": round(allocated, 2),
        "peak_reserved_gib": round(reserved, 2),
    }
    bench.record(row)
    print(f"  {family:10} {setting:44} {steps} steps: {elapsed:6.1f}s  peak {allocated:.2f}/{reserved:.2f} GiB", flush=True)


def fastest(bench: Bench) -> None:
    """
    Whole 50-step jobs, measured not extrapolated, for the settings that
    matter: the spec default, TaylorSeer (with the engine's module names),
    regional torch.compile with an untiled VAE decode, and both.
    """
    plan = [
        ("cogvideox", SPECS["cogvideox-2b-random"], (720, 480, 49)),
        ("wan", SPECS["wan2.1-t2v-1.3b-random"], (832, 480, 81)),
    ]
    if bench.args.smoke:
        plan = [("cogvideox", SPECS["tiny-random"], (64, 64, 9)), ("wan", SPECS["tiny-random-wan"], (64, 64, 9))]
    for family, spec, size in plan:
        if bench.args.only and bench.args.only != family:
            continue
        print(f"\n== {spec.name}: whole jobs at {size[0]}x{size[1]}x{size[2]} ==", flush=True)

        def work(family=family, spec=spec, size=size):
            pipe = build(bench, spec, size)
            job = 40 if family == "cogvideox" else 70
            if family == "cogvideox" and bench.has_time("default 50 steps", job):
                full_job(bench, family, spec, size, "spec default")
            pipelines.enable_cache(pipe.transformer, "taylorseer_cache")
            if bench.has_time("taylorseer 50 steps", job):
                full_job(bench, family, spec, size, "taylorseer cache")
            pipe.transformer.disable_cache()
            if not bench.has_time("compile", job + 40):
                return
            pipe.vae.disable_tiling()
            started = time.perf_counter()
            pipelines.compile_transformer(pipe.transformer)
            bench.call(pipe, spec, width=size[0], height=size[1], frames=size[2], steps=2, timed_steps=False)
            bench.record({"section": "compile", "model": family, "cold_two_step_run_s": round(time.perf_counter() - started, 1)})
            full_job(bench, family, spec, size, "compile + untiled vae")
            pipelines.enable_cache(pipe.transformer, "taylorseer_cache")
            if bench.has_time("compile + taylorseer", job + 30):
                # The first call recompiles around the cache hooks; the second is the figure.
                full_job(bench, family, spec, size, "compile + taylorseer + untiled vae (first)", steps=8)
                full_job(bench, family, spec, size, "compile + taylorseer + untiled vae")

        guarded(bench, f"{family} fastest", work)
        bench.free()


def encode_timing() -> None:
    """
    The encode the GPU machine cannot run (no imageio-ffmpeg there): the
    service's MP4, poster and preview of full-size frames, smooth (as real
    videos are) and pure noise (as random weights make), on this CPU.
    """
    import tempfile

    import numpy as np

    from generation.encoding import encode_mp4, write_poster, write_preview

    rng = np.random.default_rng(0)
    for frames, width, height in ((49, 720, 480), (81, 832, 480)):
        smooth = np.zeros((frames, height, width, 3), dtype=np.uint8)
        smooth[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, None, :]
        smooth[..., 1] = (np.arange(frames) * 5 % 256)[:, None, None]
        noise = rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8)
        for kind, video in (("smooth", smooth), ("noise", noise)):
            with tempfile.TemporaryDirectory() as workdir:
                work = Path(workdir)
                started = time.perf_counter()
                encode_mp4(video, work / "v.mp4", fps=8)
                mp4 = time.perf_counter() - started
                started = time.perf_counter()
                write_poster(video[0], work / "p.jpg")
                write_preview(video, work / "p.webp", fps=8)
                rest = time.perf_counter() - started
            print(f"  {frames}x{width}x{height} {kind:6}: mp4 {mp4:5.2f}s, poster + preview {rest:4.2f}s", flush=True)


def main() -> None:
    args = parse_args()
    if args.encode:
        encode_timing()
        return
    bench = Bench(args)
    import diffusers
    import transformers

    info = {
        "section": "device",
        "device": torch.cuda.get_device_name(0) if bench.cuda else "cpu",
        "total_gib": round(torch.cuda.get_device_properties(0).total_memory / GIB, 1) if bench.cuda else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "steps": args.steps,
    }
    bench.record(info)
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
    print(info, flush=True)
    if bench.cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if args.smoke:
        plan = [
            ("cogvideox", replace(SPECS["tiny-random"], enable_vae_tiling=True), (64, 64, 9),
             [(32, 32, 5), (64, 64, 9)], ((64, 64, 9), (32, 32, 5)), args.steps),
            ("wan", SPECS["tiny-random-wan"], (64, 64, 9), [(32, 32, 5), (64, 64, 9)], None, args.steps),
        ]
    else:
        plan = [
            ("cogvideox", SPECS["cogvideox-2b-random"], (720, 480, 49),
             [(480, 320, 13), (480, 320, 25), (480, 320, 49), (720, 480, 13), (720, 480, 25), (720, 480, 49)],
             ((720, 480, 49), (480, 320, 13)), args.steps),
            ("wan", SPECS["wan2.1-t2v-1.3b-random"], (832, 480, 81),
             [(480, 320, 21), (480, 320, 81), (832, 480, 21), (832, 480, 41), (832, 480, 61), (832, 480, 81)],
             None, max(3, args.steps - 2)),
        ]
    if args.fastest:
        fastest(bench)
        print(f"\ndone in {time.monotonic() - bench.started:.0f}s; rows in {bench.out}", flush=True)
        return
    # CogVideoX first, its options too (the speed goal is about it), then Wan.
    for family, spec, size, memory_sizes, oom_sizes, steps in plan:
        if args.only and args.only != family:
            continue
        state = {}

        def first(family=family, spec=spec, size=size, memory_sizes=memory_sizes, oom_sizes=oom_sizes, steps=steps):
            state["pipe"], state["base"] = essentials(bench, family, spec, size, memory_sizes, oom_sizes, steps)

        guarded(bench, f"{family} essentials", first)
        if "pipe" in state:
            guarded(
                bench, f"{family} options",
                lambda family=family, spec=spec, size=size: options_section(
                    bench, family, spec, state["pipe"], size, state["base"]
                ),
            )
        state.clear()
        bench.free()
    print(f"\ndone in {time.monotonic() - bench.started:.0f}s; rows in {bench.out}", flush=True)


if __name__ == "__main__":
    main()
