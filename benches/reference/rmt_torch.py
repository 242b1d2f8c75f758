"""A plain PyTorch RMT (decoder layout) at remem bench's presets, for same-minute speed comparisons.

Usage: python3 rmt_torch.py PRESET train|stream STEPS_OR_TOKENS
Prints one line: tokens/s over the timed steps (after two untimed), or over the whole stream.
"""
import sys, time
import torch
import torch.nn as nn
import torch.nn.functional as F

PRESETS = {
    "copy-small": dict(layers=4, d=128, heads=4, ff=256, m=10, seg=24, segments=3, batch=32, vocab=12),
    "medium": dict(layers=4, d=256, heads=4, ff=1024, m=16, seg=256, segments=4, batch=8, vocab=256),
}


class Block(nn.Module):
    def __init__(self, d, heads, ff):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, ff), nn.Linear(ff, d)

    def forward(self, x, mask):
        b, n, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.out(a.transpose(1, 2).reshape(b, n, d))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class Rmt(nn.Module):
    def __init__(self, layers, d, heads, ff, m, seg, vocab, **_):
        super().__init__()
        self.m, self.seg = m, seg
        self.tokens = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(2 * m + seg, d) * 0.02)
        self.memory = nn.Parameter(torch.randn(m, d) * 0.02)
        self.blocks = nn.ModuleList(Block(d, heads, ff) for _ in range(layers))
        self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, vocab)
        n = 2 * m + seg
        r, c = torch.arange(n)[:, None], torch.arange(n)[None, :]
        self.register_buffer("mask", torch.where(r < m, c < m, torch.where(r < m + seg, c <= r, True)))

    def step(self, x, mem):
        h = torch.cat([mem, self.tokens(x), mem], 1) + self.pos
        for block in self.blocks:
            h = block(h, self.mask)
        h = self.norm(h)
        m, t = self.m, self.seg
        return self.head(h[:, m:m + t]), h[:, m + t:]


def main():
    preset, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    p = PRESETS[preset]
    torch.manual_seed(0)
    model = Rmt(**p)
    t, s, b = p["seg"], p["segments"], p["batch"]
    if mode == "train":
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        times = []
        for i in range(n + 2):
            x = torch.randint(0, p["vocab"], (b, s * t + 1))
            t0 = time.perf_counter()
            mem = model.memory.expand(b, -1, -1)
            loss = 0.0
            for k in range(s):
                logits, mem = model.step(x[:, k * t:(k + 1) * t], mem)
                loss = loss + F.cross_entropy(logits.reshape(-1, p["vocab"]), x[:, k * t + 1:(k + 1) * t + 1].reshape(-1))
            opt.zero_grad()
            (loss / s).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            if i >= 2:
                times.append(time.perf_counter() - t0)
        print(f"torch {preset} train: {b * s * t * n / sum(times):.0f} tokens/s ({n} steps)")
    else:
        x = torch.randint(0, p["vocab"], (1, t))
        with torch.inference_mode():
            mem = model.memory.expand(1, -1, -1)
            _, mem = model.step(x, mem)
            segments = n // t
            t0 = time.perf_counter()
            for _ in range(segments):
                _, mem = model.step(x, mem)
            dt = time.perf_counter() - t0
        print(f"torch {preset} stream {segments * t} tokens: {segments * t / dt:.0f} tokens/s, {1e3 * dt / segments:.2f} ms/segment")


if __name__ == "__main__":
    main()
