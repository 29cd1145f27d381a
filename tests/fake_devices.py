"""
Run a tiny UniAudio2 model split over two fake accelerators, the way a `device_map` splits it, on a CPU-only build.

Under `FakeTensorMode` no kernel runs, yet every op checks that its operands share one device and raises
`FakeTensorDeviceMismatchError` otherwise. Fake tensors on `cuda` cannot be used on a CPU-only build (indexing and
`.contiguous()` open a CUDA device guard), so the two devices are `fakegpu:0` and `fakegpu:1` of PyTorch's Python
PrivateUse1 backend, which registers that guard. The backend is process-global: this script runs in its own process
(`tests/test_devices_uniaudio2.py`) and prints one JSON object, scenario name -> "ok" or the error.

Each module gets accelerate's `AlignDevicesHook` (inputs moved to the module's device on entry, outputs of the whole
model moved back), as `from_pretrained(device_map=...)` attaches. Autograd cannot run on fake PrivateUse1 devices
(its engine sizes its queues by the real device count), so the scenarios run forward passes and losses only; and
`torch.tensor(data, device=...)` becomes an empty tensor there, since the backend has no kernels to copy data with.

A second group of scenarios gives the pipelines a model dispatched that way and a codec loaded on CPU (real
weights): the pipeline must move the codec to the model's device, and encoding must run there. Fake tensors hold no
values, so the host reads the codec makes of its inputs (finite check, clip lengths from the padding mask) are
answered by `ShadowValues`, which keeps the real value of every tensor computed from known values only (the audio,
its mask; not the weights).
"""

import json
import sys
import traceback
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.utils.backend_registration as backend_registration
from accelerate.hooks import AlignDevicesHook, add_hook_to_module
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.fx.experimental.symbolic_shapes import ShapeEnv
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils.weak import WeakIdKeyDictionary


sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import random_grid, tiny_uniaudio2_config  # noqa: E402


FIRST, SECOND = "fakegpu:0", "fakegpu:1"
# Consecutive modules alternate devices wherever a device map could cut, including inside the depth decoder, whose
# own parameter (the codebook heads) sits apart from its children.
DEVICE_MAP = {
    "model.embed_tokens": FIRST,
    "model.embed_audio_tokens": SECOND,
    "model.understanding_layers.0": FIRST,
    "model.understanding_layers.1": SECOND,
    "model.understanding_norm": FIRST,
    "model.layers.0": SECOND,
    "model.layers.1": FIRST,
    "model.norm": SECOND,
    "model.generation_layers.0": FIRST,
    "model.generation_norm": SECOND,
    "model.rotary_emb": FIRST,
    "lm_head": SECOND,
    "depth_decoder.input_projection": FIRST,
    "depth_decoder.layers.0": SECOND,
    "depth_decoder.layers.1": FIRST,
    "depth_decoder.norm": SECOND,
    "depth_decoder.rotary_emb": SECOND,
    "depth_decoder": FIRST,
}


class TensorFromDataOnFakeDevice(TorchFunctionMode):
    """`torch.tensor(data, device=...)` copies data with the device's kernels: make an empty one (fake tensors hold no
    values anyway) of the same shape and dtype."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.tensor and torch.device(kwargs.get("device") or "cpu").type == "fakegpu":
            like = func(*args, **dict(kwargs, device="cpu"))
            return torch.empty(like.shape, dtype=like.dtype, device=kwargs["device"])
        return func(*args, **kwargs)


def dispatch(model):
    """Place every entry of `DEVICE_MAP` on its device and hook it like accelerate's `dispatch_model`."""
    for name, device in DEVICE_MAP.items():
        module = model.get_submodule(name)
        whole = not any(other.startswith(name + ".") for other in DEVICE_MAP)
        # accelerate's own placement re-wraps parameters in their class, which a fake parameter does not allow.
        for owner in module.modules() if whole else [module]:
            for key, param in list(owner._parameters.items()):
                if param is not None:
                    owner._parameters[key] = torch.nn.Parameter(param.detach().to(device), requires_grad=False)
            for key, buffer in list(owner._buffers.items()):
                if buffer is not None:
                    owner._buffers[key] = buffer.to(device)
        hook = AlignDevicesHook(execution_device=device, place_submodules=whole)
        hook.init_hook = lambda module: module
        add_hook_to_module(module, hook)
    add_hook_to_module(model, AlignDevicesHook(io_same_device=True), append=True)
    placed = {str(p.device) for p in model.parameters()}
    assert placed == {FIRST, SECOND}, placed
    return model


def scenarios(mode, model):
    grid = {key: mode.from_tensor(value) for key, value in random_grid(batch_size=2, seq_len=12).items()}
    attention_mask = mode.from_tensor(torch.tensor([[1] * 12, [0] * 3 + [1] * 9]))
    labels = grid["input_ids"].clone()

    def train_loss():
        model.train()
        out = model(**grid, attention_mask=attention_mask, labels=labels, audio_labels=grid["audio_codes"].clone())
        assert out.loss.device == grid["input_ids"].device and out.logits is None

    def eval_loss():
        model.eval()
        out = model(**grid, attention_mask=attention_mask, labels=labels, audio_labels=grid["audio_codes"].clone())
        assert out.loss.device == grid["input_ids"].device and out.audio_logits is not None

    def audio_free_batch():
        model.train()
        audio_free = dict(grid, audio_codes_mask=torch.zeros_like(grid["audio_codes_mask"]))
        model(**audio_free, labels=labels, audio_labels=torch.full_like(grid["audio_codes"], -100)).loss

    def cached_decoding_steps():
        model.eval()
        prefill = model(**grid, attention_mask=attention_mask, use_cache=True)
        mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], 1)
        step = model(
            input_ids=prefill.logits[:, -1:].argmax(-1),
            audio_codes=grid["audio_codes"][:, -1:],
            audio_codes_mask=torch.zeros_like(grid["audio_codes_mask"][:, -1:]),
            attention_mask=mask,
            position_ids=mask.long().cumsum(-1)[:, -1:] - 1,
            cache=prefill.cache,
            use_cache=True,
        )
        # One audio frame from the last hidden state, with guidance and every phase constraint engaged.
        last_hidden = torch.cat([step.last_hidden_state[:, -1], step.last_hidden_state[:, -1]])
        forbid = torch.tensor([False, True], device=last_hidden.device)
        frame, _ = model._sample_audio_frame(
            last_hidden,
            forbid_reasoning=forbid,
            guidance_scale=1.5,
            do_sample=False,
            temperature=1.0,
            top_k=None,
            generator=None,
            allowed=model._phase_vocabularies(last_hidden.device),
            forbid_eos=forbid,
            phase_start=~forbid,
        )
        assert frame.shape == (2, model.config.num_codebooks)

    def harness_catches_a_mix():
        # The check must be able to fail: a hidden state left on the first device meets the head on the second.
        hidden = torch.zeros(1, model.config.hidden_size, device=FIRST)
        try:
            model.lm_head._old_forward(hidden)
        except Exception as error:  # noqa: BLE001
            assert "device" in str(error), error
        else:
            raise AssertionError("an op mixing fakegpu:0 and fakegpu:1 did not raise")

    return [train_loss, eval_loss, audio_free_batch, cached_decoding_steps, harness_catches_a_mix]


class ShadowValues(TorchDispatchMode):
    """
    Real CPU copies of the fake tensors computed from known values (real tensors, or fake ones with a copy), so that
    the host reads of those (`bool`, `.item()`, `.tolist()`, the sizes of `nonzero` / boolean indexing) get their
    true values. Values stop at the first op that meets a tensor without one (the weights): no model compute is
    duplicated.
    """

    def __init__(self, max_numel: int = 10_000_000):
        super().__init__()
        self.values = WeakIdKeyDictionary()
        self.max_numel = max_numel

    def _known(self, tensor) -> bool:
        return not isinstance(tensor, FakeTensor) or tensor in self.values

    def _real(self, value):
        if isinstance(value, FakeTensor):
            return self.values[value]
        return torch.device("cpu") if isinstance(value, torch.device) else value

    def _count(self, tensor) -> int:
        with _disable_current_modes():
            return int(self._real(tensor).count_nonzero())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        aten = torch.ops.aten
        known = all(self._known(t) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor))
        if func is aten._local_scalar_dense.default and known:
            with _disable_current_modes():
                return self._real(args[0]).item()
        if func is aten.nonzero.default and known:
            args[0].nonzero_memo = self._count(args[0])
        if func is aten.index.Tensor:
            for index in args[1]:
                if index is not None and index.dtype == torch.bool and self._known(index):
                    index.nonzero_memo = self._count(index)
        out = func(*args, **kwargs)
        outputs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        if known and outputs and sum(t.numel() for t in outputs) <= self.max_numel:
            with _disable_current_modes():
                real_args, real_kwargs = tree_map(self._real, (args, kwargs))
                real_outputs = [t for t in tree_flatten(func(*real_args, **real_kwargs))[0] if isinstance(t, torch.Tensor)]
            for fake, value in zip(outputs, real_outputs):
                if isinstance(fake, FakeTensor):
                    self.values[fake] = value
        return out


class FakeAcceleratorMode(FakeTensorMode):
    """`FakeTensorMode` that treats the fake accelerator as absent (as it does CUDA on a CPU-only build): a real tensor
    moved there becomes a fake one instead of being copied by the (missing) device kernels."""

    @property
    def avoid_device_init(self) -> bool:
        return True


# Entry modules of the encoding path (WavLM is run layer by layer, from its convolutional front end).
ENCODER_STAGES = (
    "music_ssl_encoder", "whisper_encoder", "wavlm_encoder.feature_extractor", "reasoning_encoder", "reconstruction_encoder"
)


def codec_scenarios(mode, model):
    import numpy as np

    from test_reasoning_codec import randomize_, tiny_config
    from uniaudio2.feature_extraction_uniaudio2 import UniAudio2FeatureExtractor
    from uniaudio2.modeling_reasoning_codec import ReasoningCodecModel
    from uniaudio2.pipeline_uniaudio2 import UniAudio2AudioToTextPipeline, UniAudio2TextToAudioPipeline

    # A device map puts the embeddings (the model's first parameters) on the first device: `model.device`.
    model.hf_device_map = dict(DEVICE_MAP)
    rng = np.random.default_rng(0)
    clips = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (30000, 20000)]

    def run(pipeline_class):
        with _disable_current_modes():  # a codec loaded on CPU with real weights, as `from_pretrained` loads it
            codec = randomize_(ReasoningCodecModel(tiny_config(encode_window_samples=48240)).eval())
        extractor = UniAudio2FeatureExtractor()
        extractor.set_codec(codec)
        processor = SimpleNamespace(feature_extractor=extractor, tokenizer=None)
        pipe = pipeline_class(model=model, processor=processor)
        placed = {str(t.device) for t in [*codec.parameters(), *codec.buffers()]}
        assert pipe.device == torch.device(FIRST) and placed == {FIRST}, (pipe.device, placed)
        seen = {}

        def record(name):
            def hook(module, args):
                seen.setdefault(name, set()).update(str(a.device) for a in args if torch.is_tensor(a))

            return hook

        for name in ENCODER_STAGES:
            codec.get_submodule(name).register_forward_pre_hook(record(name))
        # What `pipe.preprocess` runs (through the processor): validation, padding, the codec on its device.
        pairs = extractor.encode(clips, sampling_rate=16000)
        assert seen == {name: {FIRST} for name in ENCODER_STAGES}, seen
        # 16 kHz clips of 1.875 s and 1.25 s: int(s * 5) + 1 reasoning and int(s * 12.5) + 1 reconstruction frames.
        shapes = [(tuple(r.shape), tuple(c.shape)) for r, c in pairs]
        assert shapes == [((8, 10), (8, 24)), ((8, 7), (8, 16))], shapes

    def audio_to_text_pipeline_codec_on_the_model_device():
        run(UniAudio2AudioToTextPipeline)

    def text_to_audio_pipeline_codec_on_the_model_device():
        run(UniAudio2TextToAudioPipeline)

    return [audio_to_text_pipeline_codec_on_the_model_device, text_to_audio_pipeline_codec_on_the_model_device]


def _run(scenario, results):
    try:
        scenario()
        results[scenario.__name__] = "ok"
    except Exception as error:  # noqa: BLE001
        frames = [f"{f.filename}:{f.lineno}" for f in traceback.extract_tb(error.__traceback__)]
        own = [frame for frame in frames if "uniaudio2" in frame or "tests" in frame or "transformers" in frame]
        results[scenario.__name__] = f"{type(error).__name__}: {str(error).splitlines()[0]} at {own[-6:]}"


def main():
    backend_registration._setup_privateuseone_for_python_backend("fakegpu")
    # What autocast asks of an accelerator backend (the codec disables autocast around its encoders).
    torch.fakegpu.get_amp_supported_dtype = lambda: [torch.float16, torch.bfloat16]
    from uniaudio2.modeling_uniaudio2 import UniAudio2ForConditionalGeneration

    results = {}
    torch.manual_seed(0)
    # Frames are found with `nonzero` (a data-dependent size): the shape environment gives them a symbolic size.
    with torch.no_grad(), FakeTensorMode(shape_env=ShapeEnv()) as mode, TensorFromDataOnFakeDevice():
        model = dispatch(UniAudio2ForConditionalGeneration(tiny_uniaudio2_config()))
        for scenario in scenarios(mode, model):
            _run(scenario, results)
    shape_env = ShapeEnv(allow_dynamic_output_shape_ops=True)
    with torch.no_grad(), FakeAcceleratorMode(allow_non_fake_inputs=True, shape_env=shape_env) as mode, ShadowValues():
        model = dispatch(UniAudio2ForConditionalGeneration(tiny_uniaudio2_config()))
        for scenario in codec_scenarios(mode, model):
            _run(scenario, results)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
