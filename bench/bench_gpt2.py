"""Steady-state training step of Hugging Face's GPT2LMHeadModel on moreh, divided by CPU eager, in one
process (AdamW, gradient clipping, the model's own loss). The model is built from a GPT2Config with
random weights; nothing is downloaded. Dropout is off by default so that the two runs' losses can be
compared (each device draws its own dropout masks); --dropout 0.1 times GPT-2's default."""
import argparse
import os
import sys

import torch
from transformers import GPT2Config, GPT2LMHeadModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from step_timing import compare  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--n-embd", type=int, default=256)
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--bf16", action="store_true", help="forward under torch.autocast(device, bfloat16)")
    cfg = p.parse_args()

    config = GPT2Config(vocab_size=cfg.vocab, n_positions=cfg.seq_len, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
                        n_head=cfg.n_head, resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout,
                        attn_pdrop=cfg.dropout, bos_token_id=None, eos_token_id=None, loss_type="ForCausalLM")

    def make_step(device):
        torch.manual_seed(0)
        model = GPT2LMHeadModel(config).to(device)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=3e-4)

        def step(ids):
            ids = ids.to(device)
            with torch.autocast(device, dtype=torch.bfloat16, enabled=cfg.bf16):
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss.item()

        return step

    g = torch.Generator().manual_seed(0)
    data = [torch.randint(0, cfg.vocab, (cfg.batch_size, cfg.seq_len), generator=g)
            for _ in range(cfg.warmup + cfg.steps)]
    n_params = sum(p.numel() for p in GPT2LMHeadModel(config).parameters())
    compare(f"GPT2LMHeadModel n_embd={cfg.n_embd} n_layer={cfg.n_layer} n_head={cfg.n_head} vocab={cfg.vocab} "
            f"({n_params / 1e6:.1f}M params) batch={cfg.batch_size}x{cfg.seq_len} dropout={cfg.dropout} "
            f"{'bf16 autocast' if cfg.bf16 else 'fp32'}",
            make_step("cpu"), make_step("moreh"), data, cfg.warmup, cfg.batch_size * cfg.seq_len)


if __name__ == "__main__":
    main()
