"""Train a small GPT, character by character, on this file's own text.

An ordinary PyTorch script: the only moreh-specific thing in it is the device string. Run it with
--device cpu to compare. Logs one line per step: loss, duration and throughput in tokens/s.
"""
import argparse
import math
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model, n_head, dropout):
        super().__init__()
        self.n_head, self.dropout = n_head, dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        return self.proj(y.transpose(1, 2).contiguous().view(B, T, C))


class Block(nn.Module):
    def __init__(self, d_model, n_head, dropout):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_head, dropout)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model),
                                 nn.Dropout(dropout))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, vocab, block_size, d_model, n_head, n_layer, dropout):
        super().__init__()
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(block_size, d_model)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.Sequential(*[Block(d_model, n_head, dropout) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab, bias=False)
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, idx):
        pos = torch.arange(idx.size(1), device=idx.device)
        x = self.drop(self.tok(idx) + self.pos(pos))
        return self.head(self.ln_f(self.blocks(x)))


def batches(data, batch_size, block_size, generator):
    while True:
        ix = torch.randint(len(data) - block_size - 1, (batch_size,), generator=generator)
        x = torch.stack([data[i:i + block_size] for i in ix])
        y = torch.stack([data[i + 1:i + 1 + block_size] for i in ix])
        yield x, y


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="moreh")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--block-size", type=int, default=128)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--advanced-parallelization", action="store_true",
                   help="let moreh choose the parallel layout (torch.moreh.option.enable_advanced_parallelization)")
    args = p.parse_args()
    if args.advanced_parallelization and args.device == "moreh":
        torch.moreh.option.enable_advanced_parallelization()

    torch.manual_seed(args.seed)
    text = open(os.path.abspath(__file__), encoding="utf-8").read()
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([stoi[c] for c in text], dtype=torch.long)

    device = torch.device(args.device)
    start = time.time()
    model = GPT(len(chars), args.block_size, args.d_model, args.n_head, args.n_layer, args.dropout).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / 5) * 0.5 * (1 + math.cos(math.pi * s / max(1, args.steps))))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"device: {device} | parameters: {n_params / 1e6:.2f}M | vocab: {len(chars)} | "
          f"batch: {args.batch_size} x {args.block_size} tokens")

    loader = batches(data, args.batch_size, args.block_size, torch.Generator().manual_seed(args.seed))
    model.train()
    tokens_per_step = args.batch_size * args.block_size
    for step in range(1, args.steps + 1):
        x, y = next(loader)
        x, y = x.to(device), y.to(device)
        logits = model(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        loss_value = loss.item()
        now = time.time()
        duration, start = now - start, now
        if step == 1:
            print(f"Model load and warmup done. Duration: {duration:.2f} | Loss: {loss_value:.4f}")
        else:
            print(f"[Step {step}/{args.steps}] | Loss: {loss_value:.4f} | Duration: {duration:.3f} | "
                  f"Throughput: {tokens_per_step / duration:.2f} tokens/sec")
    print("Training Done")


if __name__ == "__main__":
    main()
