#!/usr/bin/env python3
"""Write tests/vectors/transformers_qwen2/: a tiny random Qwen2 model saved by transformers'
save_pretrained (safetensors), with the digests PyTorch itself gives:
  expected-bf16.sha256:   hashlib.sha256(t.to(torch.bfloat16).contiguous().view(torch.uint8))
  expected-native.sha256: hashlib.sha256(t.contiguous().view(torch.uint8))
in sha256sum line form. Needs torch and transformers (not needed by the tests that read it)."""
import hashlib
import os
import sys

import torch
from safetensors.torch import load_file
from transformers import Qwen2Config, Qwen2ForCausalLM

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "transformers_qwen2")
torch.manual_seed(20261128)
cfg = Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=250, tie_word_embeddings=False,
                  max_position_embeddings=128)
model = Qwen2ForCausalLM(cfg).to(torch.float32)
with torch.no_grad():  # random init leaves norms at 1 and biases at 0: make every tensor distinct
    for p in model.parameters():
        p.normal_(0, 0.05)
model.save_pretrained(out, safe_serialization=True)
tensors = load_file(os.path.join(out, "model.safetensors"))
for policy, fn in (("bf16", lambda t: t.to(torch.bfloat16)), ("native", lambda t: t)):
    with open(os.path.join(out, f"expected-{policy}.sha256"), "w") as f:
        for name in sorted(tensors):
            b = fn(tensors[name]).contiguous().view(torch.uint8).numpy().tobytes()
            f.write(f"{hashlib.sha256(b).hexdigest()}  {name}\n")
print("torch", torch.__version__, "transformers", __import__("transformers").__version__)
