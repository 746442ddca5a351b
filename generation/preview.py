"""
Live previews: the current latents of a denoising run projected to a small
RGB image with a fixed linear map, without the VAE (a decode would cost more
than a step). The engine's own: it takes a tensor and returns JPEG bytes.

The maps, per pipeline family and latent channel count:
- Wan 2.1 (16 channels): the latent-to-RGB factors and bias ComfyUI publishes
  for its previews (comfy/latent_formats.py, Wan21), fitted to its VAE.
- Anything else (CogVideoX's 16 channels, the tiny models' 4): no published
  factors were found for CogVideoX, so a fixed map stands in: channel i adds
  to colour i % 3, and the image is stretched to its own range. It shows
  where the picture is forming, not its true colours.
"""

import io

import numpy as np

# Rows: latent channels; columns: R, G, B. From ComfyUI's comfy/latent_formats.py (Wan21).
WAN21_RGB_FACTORS = [
    [-0.1299, -0.1692, 0.2932],
    [0.0671, 0.0406, 0.0442],
    [0.3568, 0.2548, 0.1747],
    [0.0372, 0.2344, 0.1420],
    [0.0313, 0.0189, -0.0328],
    [0.0296, -0.0956, -0.0665],
    [-0.3477, -0.4059, -0.2925],
    [0.0166, 0.1902, 0.1975],
    [-0.0412, 0.0267, -0.1364],
    [-0.1293, 0.0740, 0.1636],
    [0.0680, 0.3019, 0.1128],
    [0.0032, 0.0581, 0.0639],
    [-0.1251, 0.0927, 0.1699],
    [0.0060, -0.0633, 0.0005],
    [0.3477, 0.2275, 0.2950],
    [0.1984, 0.0913, 0.1861],
]
WAN21_RGB_BIAS = [-0.1835, -0.0868, -0.3360]

# The preview's longer side, in pixels: latents are an eighth of the video's size.
MAX_SIDE = 256
JPEG_QUALITY = 80


class LatentPreview:
    """
    Turns a pipeline's latents into a JPEG of the middle latent frame.
    `pipeline_class` decides the layout: CogVideoX's latents are (batch,
    frames, channels, h, w), Wan's (batch, channels, frames, h, w).
    """

    def __init__(self, pipeline_class: str):
        self.channels_first = not pipeline_class.startswith("CogVideoX")
        self.fitted = pipeline_class.startswith("Wan")

    def frame(self, latents) -> "np.ndarray":
        """The middle latent frame as (h, w, 3) uint8."""
        import torch

        with torch.no_grad():
            video = latents[0].detach()
            if self.channels_first:
                video = video.transpose(0, 1)  # (frames, channels, h, w)
            latent = video[video.shape[0] // 2].float()  # (channels, h, w)
            channels = latent.shape[0]
            if self.fitted and channels == len(WAN21_RGB_FACTORS):
                factors = torch.tensor(WAN21_RGB_FACTORS, device=latent.device)
                bias = torch.tensor(WAN21_RGB_BIAS, device=latent.device)
                rgb = torch.einsum("chw,cr->hwr", latent, factors) + bias
                rgb = ((rgb + 1) / 2).clamp(0, 1)
            else:
                factors = torch.zeros(channels, 3, device=latent.device)
                factors[torch.arange(channels), torch.arange(channels) % 3] = 1.0
                rgb = torch.einsum("chw,cr->hwr", latent, factors)
                low, high = rgb.amin(dim=(0, 1)), rgb.amax(dim=(0, 1))
                rgb = (rgb - low) / (high - low).clamp(min=1e-6)
            return (rgb * 255).round().to(torch.uint8).cpu().numpy()

    def jpeg(self, latents) -> bytes:
        from PIL import Image

        image = Image.fromarray(self.frame(latents))
        scale = MAX_SIDE / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR)
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=JPEG_QUALITY)
        return out.getvalue()
