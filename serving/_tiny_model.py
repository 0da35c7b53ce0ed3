"""Build a tiny random-weight Llama model, its tokenizer and random LoRA adapters, all locally.

Run by ``serving.vllm_dev`` with the *vLLM virtual environment's* python (it has torch, transformers,
tokenizers and peft), never imported by the gateway: ``python _tiny_model.py OUT_DIR name1 name2 ...``.
Writes ``OUT_DIR/base`` (model + tokenizer) and ``OUT_DIR/lora/<name>`` per adapter, then
``OUT_DIR/manifest.json`` last, so a half-written directory is never mistaken for a finished one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# A little built-in text so the BPE merges look like the domains the gateway routes.
_CORPUS = """
SELECT name, COUNT(*) FROM users WHERE created_at > '2024-01-01' GROUP BY name ORDER BY 2 DESC;
INSERT INTO orders (id, total) VALUES (1, 9.99); UPDATE accounts SET balance = balance - 10;
def fibonacci(n: int) -> int:
    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)
class Stack:
    def push(self, item): self.items.append(item)
for i in range(10): print(i)  # python function return import
My order has not arrived, I would like a refund. How do I reset my password? Thank you for your help.
Please cancel my subscription. The invoice is wrong. Can you help me with my account?
What is the integral of x squared? Solve 2x + 3 = 7. The derivative of sin x is cos x.
The quick brown fox jumps over the lazy dog. Hello, how are you today? I am fine, thanks.
A language model answers questions about databases, code, support tickets and mathematics.
"""

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL = ["<unk>", "<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>"]


def build_tokenizer(out: Path, vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    # Byte-level: every input string encodes, whatever the corpus covered.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", pad_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    return fast


def build(out_dir: str, adapters: list[str], seed: int = 0) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    out = Path(out_dir)
    base = out / "base"
    base.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(base, vocab_size=512)
    print(f"[tiny-model] tokenizer: {len(tok)} tokens", flush=True)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4,  # head size 32: vLLM's CPU attention needs >= 32
        max_position_embeddings=2048, rms_norm_eps=1e-5, tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    model = LlamaForCausalLM(cfg).float()
    model.generation_config = GenerationConfig(bos_token_id=tok.bos_token_id,
                                               eos_token_id=tok.eos_token_id,
                                               pad_token_id=tok.pad_token_id)
    model.save_pretrained(base)
    print(f"[tiny-model] base model: {sum(p.numel() for p in model.parameters())} parameters -> {base}",
          flush=True)
    for i, name in enumerate(adapters):
        torch.manual_seed(seed + 1 + i)
        fresh = LlamaForCausalLM.from_pretrained(base)
        # init_lora_weights=False: random A *and* B, so each adapter really changes the output.
        lcfg = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], lora_dropout=0.0,
                          init_lora_weights=False, task_type="CAUSAL_LM")
        peft_model = get_peft_model(fresh, lcfg)
        target = out / "lora" / name
        peft_model.save_pretrained(target)
        cfg_path = target / "adapter_config.json"
        data = json.loads(cfg_path.read_text())
        data["base_model_name_or_path"] = str(base)  # a local path, never a hub id
        cfg_path.write_text(json.dumps(data, indent=2))
        print(f"[tiny-model] LoRA adapter {name!r} -> {target}", flush=True)
    manifest = {"base": str(base), "adapters": {n: str(out / "lora" / n) for n in adapters},
                "max_position_embeddings": cfg.max_position_embeddings, "lora_rank": 8}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))


if __name__ == "__main__":
    build(sys.argv[1], sys.argv[2:])
