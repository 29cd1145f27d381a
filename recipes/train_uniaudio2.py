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
One stage of the UniAudio 2.0 four-stage recipe with `Trainer` (single process or `accelerate launch`).

    python recipes/train_uniaudio2.py recipes/configs/stage1.yaml --config_name <config.json> --dataset <rows> \\
        --output_dir outputs/stage1
    python recipes/train_uniaudio2.py recipes/configs/stage2.yaml --model_name_or_path outputs/stage1 ...
    accelerate launch --config_file recipes/accelerate/ddp.yaml recipes/train_uniaudio2.py recipes/configs/stage3.yaml ...

See `recipes/README.md` and `python recipes/train_uniaudio2.py --help`.
"""

import sys

from uniaudio2.training_uniaudio2 import train_main


if __name__ == "__main__":
    sys.exit(train_main(sys.argv[1:]))
