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
"""

import json
import sys
import traceback
from pathlib import Path

import torch
import torch.utils.backend_registration as backend_registration
from accelerate.hooks import AlignDevicesHook, add_hook_to_module
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.symbolic_shapes import ShapeEnv
from torch.overrides import TorchFunctionMode


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


def main():
    backend_registration._setup_privateuseone_for_python_backend("fakegpu")
    from uniaudio2.modeling_uniaudio2 import UniAudio2ForConditionalGeneration

    results = {}
    torch.manual_seed(0)
    # Frames are found with `nonzero` (a data-dependent size): the shape environment gives them a symbolic size.
    with torch.no_grad(), FakeTensorMode(shape_env=ShapeEnv()) as mode, TensorFromDataOnFakeDevice():
        model = dispatch(UniAudio2ForConditionalGeneration(tiny_uniaudio2_config()))
        for scenario in scenarios(mode, model):
            try:
                scenario()
                results[scenario.__name__] = "ok"
            except Exception as error:  # noqa: BLE001
                frames = [f"{f.filename}:{f.lineno}" for f in traceback.extract_tb(error.__traceback__)]
                own = [frame for frame in frames if "uniaudio2" in frame or "tests" in frame or "transformers" in frame]
                results[scenario.__name__] = f"{type(error).__name__}: {str(error).splitlines()[0]} at {own[-6:]}"
    print(json.dumps(results))


if __name__ == "__main__":
    main()
