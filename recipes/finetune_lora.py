#!/usr/bin/env python
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
LoRA fine-tuning of a UniAudio 2.0 checkpoint with `Trainer` + peft.

    python recipes/finetune_lora.py recipes/configs/finetune_lora.yaml --model_name_or_path <checkpoint> \\
        --dataset <rows> --tokenizer <checkpoint> --codec <codec dir> --output_dir outputs/lora

See `recipes/README.md` and `python recipes/finetune_lora.py --help`.
"""

import sys

from uniaudio2.training_uniaudio2 import finetune_main


if __name__ == "__main__":
    sys.exit(finetune_main(sys.argv[1:]))
