"""Training scripts written the way PyTorch's own examples write them, timed on moreh and on CPU eager
PyTorch in one process (same weights, same data), printed as ratios moreh / CPU.

Scripts (`--scripts`, comma-separated):
  lstm         pytorch/examples word_language_model, `--model LSTM`: Embedding(10000, 64) -> LSTM(64, 64,
               2 layers) -> Linear(64, 10000) -> log_softmax, NLLLoss, batch 20 columns x bptt 35. One long
               token tensor, batchified as in the example (shape (nbatch, 20)), moved to the device once;
               each step slices `source[i:i+35]` / `source[i+1:i+36].view(-1)` (views, sliding window),
               detaches the hidden state (repackage_hidden), model.zero_grad(), backward,
               clip_grad_norm_(0.25), manual SGD `p.data.add_(p.grad, alpha=-lr)`, `total_loss +=
               loss.item()`.
  transformer  the same example's Transformer model: nn.TransformerEncoder (d_model 64, 2 heads, 2 layers,
               dim_feedforward 128), positional encoding, a float causal mask from
               nn.Transformer.generate_square_subsequent_mask(35) moved to the device, same data pipeline
               and manual SGD. TransformerEncoder.forward reads `bool((mask == causal).all())` on the host
               every call (torch.nn.modules.transformer._detect_is_causal_mask, is_causal=None), which
               ends a step graph: the script itself makes 2 step graphs per training step.
  gpt2-dp4     Hugging Face GPT2LMHeadModel (2 layers, n_embd 64, 2 heads, vocab 1000, 64 positions, tied
               embeddings), the model's own loss, AdamW, clip_grad_norm_(1.0) as the HF Trainer does,
               batch 8 x 32 tokens moved to the device every step, on MOREH_NUM_DEVICES=4 host devices.
               Also reports the collective bytes per step against a ring all-reduce of the gradients.

Dropout is 0 everywhere (moreh and CPU draw different dropout masks). Every script runs in its own child
process (the number of devices is fixed when moreh's engine starts, and a fresh process makes the first
step the first one ever on that device whatever the script order); the CPU baseline runs in the same
child. Measured per device:
  - first step: the very first training step on that device in the process (moreh first, then CPU);
    for moreh it includes recording, Meta shape inference, planning and compiling. What runs first in a
    process also pays what both devices pay once (oneDNN generating its kernels for these shapes, the
    heap growing), so a second child times CPU's first step as the first one in its process too; the
    table's `first ms` ratio is the moreh-first one, the line below it compares each device's first step
    taken first;
  - steady state: `--repeats` R times, alternating CPU then moreh: `--warmup` W steps, then `--steps` K
    timed steps (wall time of the K steps, ending in a synchronize, over K); the median of the R (the
    minimum too: on a shared machine other processes only ever add time);
  - over the timed steps only: plan-cache misses (target 0), step graphs per training step (flushes /
    steps, target 1), recorded and eager (flushing) ops per step, context switches (voluntary +
    involuntary) and minor page faults per step from getrusage(RUSAGE_SELF) (all threads of the process);
  - the first step's loss on both devices (must agree to 1e-4 relative; a mismatch makes the exit code
    1) and the largest relative loss difference over all steps (both devices run the same steps on the
    same data, so their losses stay comparable step by step).

Prints one table and one line per script starting with `JSON `. `--quick` runs tiny sizes (smoke test).
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = ("lstm", "transformer", "gpt2-dp4")
LOSS_RTOL = 1e-4
DP_DEVICES = 4


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scripts", default=",".join(SCRIPTS), help="comma-separated subset of " + ",".join(SCRIPTS))
    p.add_argument("--steps", type=int, default=None, help="timed steps per repetition (default 10, --quick 2)")
    p.add_argument("--repeats", type=int, default=None, help="repetitions per device (default 3, --quick 1)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps before each repetition (default 2, --quick 1)")
    p.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test")
    p.add_argument("--cpu-first-alone", action="store_true", help=argparse.SUPPRESS)  # a child's second job
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in the children (default: torch's)")
    p.add_argument("--child", choices=SCRIPTS, help=argparse.SUPPRESS)
    cfg = p.parse_args(argv)
    cfg.steps = cfg.steps if cfg.steps is not None else (2 if cfg.quick else 10)
    cfg.repeats = cfg.repeats if cfg.repeats is not None else (1 if cfg.quick else 3)
    cfg.warmup = cfg.warmup if cfg.warmup is not None else (1 if cfg.quick else 2)
    if cfg.steps < 1 or cfg.repeats < 1 or cfg.warmup < 0:
        p.error("--steps and --repeats must be >= 1, --warmup >= 0")
    cfg.scripts = [s.strip() for s in cfg.scripts.split(",") if s.strip()]
    for s in cfg.scripts:
        if s not in SCRIPTS:
            p.error(f"unknown script {s!r}; choose from {', '.join(SCRIPTS)}")
    # word_language_model sizes (the example's defaults are emsize/nhid 200; 64 here) and GPT-2's
    cfg.ntokens = 1000 if cfg.quick else 10000
    cfg.tokens_per_column = 200 if cfg.quick else 2000
    cfg.batch_size, cfg.bptt, cfg.emsize, cfg.nhid, cfg.nlayers, cfg.nhead = 20, 35, 64, 64, 2, 2
    cfg.tf_ff, cfg.lr, cfg.clip = 128, 20.0, 0.25
    cfg.gpt2_batch, cfg.gpt2_seq, cfg.gpt2_vocab = 8, 32, 1000
    return cfg


# ============================ the scripts (child process) ============================================
def word_lm_models(cfg):
    """RNNModel and TransformerModel from pytorch/examples word_language_model/model.py (dropout 0)."""
    import math

    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class RNNModel(nn.Module):
        def __init__(self, rnn_type, ntoken, ninp, nhid, nlayers, dropout=0.5):
            super().__init__()
            self.ntoken = ntoken
            self.drop = nn.Dropout(dropout)
            self.encoder = nn.Embedding(ntoken, ninp)
            self.rnn = getattr(nn, rnn_type)(ninp, nhid, nlayers, dropout=dropout)
            self.decoder = nn.Linear(nhid, ntoken)
            self.init_weights()
            self.rnn_type, self.nhid, self.nlayers = rnn_type, nhid, nlayers

        def init_weights(self):
            initrange = 0.1
            nn.init.uniform_(self.encoder.weight, -initrange, initrange)
            nn.init.zeros_(self.decoder.bias)
            nn.init.uniform_(self.decoder.weight, -initrange, initrange)

        def forward(self, input, hidden):
            emb = self.drop(self.encoder(input))
            output, hidden = self.rnn(emb, hidden)
            output = self.drop(output)
            decoded = self.decoder(output)
            decoded = decoded.view(-1, self.ntoken)
            return F.log_softmax(decoded, dim=1), hidden

        def init_hidden(self, bsz):
            weight = next(self.parameters())
            return (weight.new_zeros(self.nlayers, bsz, self.nhid), weight.new_zeros(self.nlayers, bsz, self.nhid))

    class PositionalEncoding(nn.Module):
        def __init__(self, d_model, dropout=0.1, max_len=5000):
            super().__init__()
            self.dropout = nn.Dropout(p=dropout)
            pe = torch.zeros(max_len, d_model)
            position = torch.arange(0, max_len, dtype=torch.float).unsqueeze(1)
            div_term = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
            pe[:, 0::2] = torch.sin(position * div_term)
            pe[:, 1::2] = torch.cos(position * div_term)
            pe = pe.unsqueeze(0).transpose(0, 1)
            self.register_buffer("pe", pe)

        def forward(self, x):
            x = x + self.pe[: x.size(0), :]
            return self.dropout(x)

    class TransformerModel(nn.Module):
        def __init__(self, ntoken, ninp, nhead, nhid, nlayers, dropout=0.5):
            super().__init__()
            self.src_mask = None
            self.pos_encoder = PositionalEncoding(ninp, dropout)
            encoder_layers = nn.TransformerEncoderLayer(ninp, nhead, nhid, dropout)
            self.transformer_encoder = nn.TransformerEncoder(encoder_layers, nlayers)
            self.encoder = nn.Embedding(ntoken, ninp)
            self.ninp = ninp
            self.decoder = nn.Linear(ninp, ntoken)
            self.init_weights()

        def init_weights(self):
            initrange = 0.1
            nn.init.uniform_(self.encoder.weight, -initrange, initrange)
            nn.init.zeros_(self.decoder.bias)
            nn.init.uniform_(self.decoder.weight, -initrange, initrange)

        def forward(self, src, has_mask=True):
            if has_mask:
                device = src.device
                if self.src_mask is None or self.src_mask.size(0) != len(src):
                    mask = nn.Transformer.generate_square_subsequent_mask(len(src)).to(device)
                    self.src_mask = mask
            else:
                self.src_mask = None
            src = self.encoder(src) * math.sqrt(self.ninp)
            src = self.pos_encoder(src)
            output = self.transformer_encoder(src, self.src_mask)
            output = self.decoder(output)
            return F.log_softmax(output, dim=-1)

    return RNNModel, TransformerModel


class WordLanguageModel:
    """One device's copy of word_language_model/main.py's train(): the model, the batchified data on the
    device, the position in it. `step()` is one iteration of its loop and returns loss.item()."""

    def __init__(self, model, corpus, device, cfg):
        import torch
        import torch.nn as nn

        self.torch, self.cfg, self.device = torch, cfg, device
        self.model = model.to(device)
        self.model.train()
        self.is_transformer = not hasattr(self.model, "init_hidden")
        self.train_data = self.batchify(corpus, cfg.batch_size)
        self.criterion = nn.NLLLoss()
        self.ntokens = cfg.ntokens
        self.hidden = None if self.is_transformer else self.model.init_hidden(cfg.batch_size)
        # Full bptt windows only: the example's last, shorter window of an epoch is a new shape (one plan-
        # cache miss per epoch on moreh); the timing is about the steady state, so it is left out.
        self.starts = list(range(0, self.train_data.size(0) - 1 - cfg.bptt + 1, cfg.bptt))
        self.batch = 0
        self.total_loss = 0.0

    def batchify(self, data, bsz):
        nbatch = data.size(0) // bsz
        data = data.narrow(0, 0, nbatch * bsz)
        data = data.view(bsz, -1).t().contiguous()
        return data.to(self.device)

    def get_batch(self, source, i):
        seq_len = min(self.cfg.bptt, len(source) - 1 - i)
        data = source[i:i + seq_len]
        target = source[i + 1:i + 1 + seq_len].view(-1)
        return data, target

    @staticmethod
    def repackage_hidden(h):
        if isinstance(h, tuple):
            return tuple(WordLanguageModel.repackage_hidden(v) for v in h)
        return h.detach()

    def step(self):
        torch, model = self.torch, self.model
        i = self.starts[self.batch % len(self.starts)]
        self.batch += 1
        data, targets = self.get_batch(self.train_data, i)
        model.zero_grad()
        if self.is_transformer:
            output = model(data)
            output = output.view(-1, self.ntokens)
        else:
            self.hidden = self.repackage_hidden(self.hidden)
            output, self.hidden = model(data, self.hidden)
        loss = self.criterion(output, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), self.cfg.clip)
        for p in model.parameters():
            p.data.add_(p.grad, alpha=-self.cfg.lr)
        value = loss.item()
        self.total_loss += value
        return value


class GPT2Training:
    """A Hugging Face style loop: batches from the host moved to the device each step, the model's own loss,
    clip_grad_norm_(1.0), AdamW, zero_grad."""

    def __init__(self, model, batches, device):
        import torch

        self.torch, self.device, self.batches = torch, device, batches
        self.model = model.to(device)
        self.model.train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=5e-4, weight_decay=0.01)
        self.batch = 0

    def step(self):
        ids = self.batches[self.batch % len(self.batches)].to(self.device)
        self.batch += 1
        loss = self.model(input_ids=ids, labels=ids).loss
        loss.backward()
        self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.item()


def build(script, cfg):
    """(cpu run, moreh run, description, extra facts) for `script`: both from the same initial weights."""
    import copy

    import torch

    if script in ("lstm", "transformer"):
        RNNModel, TransformerModel = word_lm_models(cfg)
        torch.manual_seed(0)
        if script == "lstm":
            model = RNNModel("LSTM", cfg.ntokens, cfg.emsize, cfg.nhid, cfg.nlayers, dropout=0.0)
        else:
            model = TransformerModel(cfg.ntokens, cfg.emsize, cfg.nhead, cfg.tf_ff, cfg.nlayers, dropout=0.0)
        corpus = torch.randint(0, cfg.ntokens, (cfg.batch_size * cfg.tokens_per_column,),
                               generator=torch.Generator().manual_seed(1))
        dev_model = copy.deepcopy(model)
        cpu = WordLanguageModel(model, corpus, "cpu", cfg)
        dev = WordLanguageModel(dev_model, corpus, "moreh", cfg)
        shape = (f"vocab {cfg.ntokens}, emsize {cfg.emsize}, {cfg.nlayers} layers, data "
                 f"{tuple(cpu.train_data.shape)} ({len(cpu.starts)} bptt windows), batch {cfg.batch_size} x "
                 f"bptt {cfg.bptt}")
        return cpu, dev, shape, {"tokens_per_step": cfg.batch_size * cfg.bptt}

    import transformers

    config = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=cfg.gpt2_vocab, n_positions=64,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    g = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, cfg.gpt2_vocab, (cfg.gpt2_batch, cfg.gpt2_seq), generator=g) for _ in range(16)]
    dev_model = copy.deepcopy(model)
    # model.parameters() yields a shared Parameter once: the tied wte / lm_head weight counts once.
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    cpu = GPT2Training(model, batches, "cpu")
    dev = GPT2Training(dev_model, batches, "moreh")
    assert dev.model.lm_head.weight is dev.model.transformer.wte.weight, "tied embeddings got untied"
    shape = (f"GPT2LMHeadModel 2 layers, n_embd 64, vocab {cfg.gpt2_vocab}, batch {cfg.gpt2_batch} x "
             f"{cfg.gpt2_seq}, {sum(p.numel() for p in model.parameters())} parameters")
    return cpu, dev, shape, {"tokens_per_step": cfg.gpt2_batch * cfg.gpt2_seq, "param_bytes": param_bytes}


def rel(a, b):
    return abs(a - b) / max(abs(a), 1e-30)


def measure(script, cfg):
    import resource
    import statistics

    import torch

    cpu, dev, shape, facts = build(script, cfg)
    stats = torch.moreh.graph_stats
    sync = torch.moreh.synchronize
    sync()
    now = time.perf_counter

    # First steps: moreh first (its first step ever in this process), then CPU's.
    s0 = stats()
    t = now()
    dev_first_loss = dev.step()
    sync()
    dev_first = now() - t
    s1 = stats()
    t = now()
    cpu_first_loss = cpu.step()
    cpu_first = now() - t
    losses = {"cpu": [cpu_first_loss], "moreh": [dev_first_loss]}

    keys = ("recorded_ops", "eager_ops", "flushes", "cache_hits", "cache_misses", "replicated_fallbacks",
            "collective_bytes", "replay_host_ms", "total_compile_ms")
    acc = {d: {"block_ms": [], "csw": 0, "minflt": 0, **{k: 0 for k in keys}} for d in ("cpu", "moreh")}
    warm_misses = 0
    for _ in range(cfg.repeats):
        for name, run in (("cpu", cpu), ("moreh", dev)):
            w0 = stats()
            for _ in range(cfg.warmup):
                losses[name].append(run.step())
            sync()
            g0 = stats()
            warm_misses += g0["cache_misses"] - w0["cache_misses"]
            u0 = resource.getrusage(resource.RUSAGE_SELF)
            t0 = now()
            for _ in range(cfg.steps):
                losses[name].append(run.step())
            sync()  # nothing left queued (item() already waited for the step; this is cheap)
            t1 = now()
            u1 = resource.getrusage(resource.RUSAGE_SELF)
            g1 = stats()
            a = acc[name]
            a["block_ms"].append((t1 - t0) * 1e3 / cfg.steps)
            a["csw"] += (u1.ru_nvcsw + u1.ru_nivcsw) - (u0.ru_nvcsw + u0.ru_nivcsw)
            a["minflt"] += u1.ru_minflt - u0.ru_minflt
            for k in keys:
                a[k] += g1[k] - g0[k]

    timed = cfg.steps * cfg.repeats
    out = {"script": script, "describe": shape, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
           "flavor": torch.moreh.flavor()[0], "num_devices": torch.moreh.get_device_properties().num_physical_devices,
           "steps": cfg.steps, "repeats": cfg.repeats, "warmup": cfg.warmup, "quick": cfg.quick,
           "tokens_per_step": facts["tokens_per_step"]}
    for name, first in (("cpu", cpu_first), ("moreh", dev_first)):
        a = acc[name]
        out[name] = {
            "ms_per_step": statistics.median(a["block_ms"]),
            "ms_per_step_repeats": a["block_ms"],
            "ms_per_step_min": min(a["block_ms"]),  # less sensitive to other processes than the median
            "first_step_ms": first * 1e3,
            "csw_per_step": a["csw"] / timed,
            "minflt_per_step": a["minflt"] / timed,
            "first_loss": losses[name][0],
        }
    a, m = acc["moreh"], out["moreh"]
    m.update({
        "cache_misses": a["cache_misses"],  # over the timed steps; target 0
        "cache_hits": a["cache_hits"],
        "cache_misses_warmup": warm_misses,  # in the untimed warm-up steps after the first step
        "graphs_per_step": a["flushes"] / timed,  # target 1
        "recorded_ops_per_step": a["recorded_ops"] / timed,
        "eager_ops_per_step": a["eager_ops"] / timed,
        # mean over all timed steps (the median step may be shorter); summed over the host devices
        "replay_host_ms_per_step": a["replay_host_ms"] / timed,
        "first_step_compile_ms": s1["total_compile_ms"] - s0["total_compile_ms"],
        "first_step_graphs": s1["flushes"] - s0["flushes"],
        "first_step_cache_misses": s1["cache_misses"] - s0["cache_misses"],
        "first_step_recorded_ops": s1["recorded_ops"] - s0["recorded_ops"],
        "first_step_eager_ops": s1["eager_ops"] - s0["eager_ops"],
    })
    # CPU steps must leave moreh's counters alone
    out["cpu"]["moreh_counter_changes"] = {k: v for k, v in acc["cpu"].items()
                                           if k in keys and k != "replay_host_ms" and v}
    out["ratio_step"] = m["ms_per_step"] / out["cpu"]["ms_per_step"]
    out["ratio_first_step"] = m["first_step_ms"] / out["cpu"]["first_step_ms"]
    out["first_loss_rel_diff"] = rel(cpu_first_loss, dev_first_loss)
    out["first_loss_ok"] = out["first_loss_rel_diff"] <= LOSS_RTOL
    out["loss_gap_max"] = max(rel(c, d) for c, d in zip(losses["cpu"], losses["moreh"]))
    out["last_loss"] = {"cpu": losses["cpu"][-1], "moreh": losses["moreh"][-1]}

    if script == "gpt2-dp4":
        n = out["num_devices"]
        # graph_stats()["collective_bytes"] is Engine::collective_bytes() = Communicator::total_bytes_sent(),
        # the sum over all ranks of the bytes each rank sent: a TOTAL over the N devices. Per device it is
        # that over N. The ideal per device is a ring all-reduce of every parameter's gradient once:
        # 2(N-1)/N x the parameters' bytes (the tied wte/lm_head weight counted once).
        total = a["collective_bytes"] / timed
        ideal = 2 * (n - 1) / n * facts["param_bytes"]
        out["collectives"] = {
            "param_bytes": facts["param_bytes"],
            "bytes_per_step_total": total,
            "bytes_per_step_per_device": total / n,
            "ideal_per_device": ideal,
            "ratio_to_ideal": (total / n) / ideal if ideal else None,
            "replicated_fallbacks_per_step": a["replicated_fallbacks"] / timed,
            "replicated_fallbacks_total": stats()["replicated_fallbacks"],
        }
    return out


def moreh_build():
    """Which moreh build ran: the extension's file and its modification time (the tree may be rebuilt
    between runs)."""
    import torch_moreh

    lib = torch_moreh._C.__file__
    return {"library": lib, "library_mtime": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(os.path.getmtime(lib)))}


def git_head():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def cpu_first_alone(script, cfg):
    """CPU eager's first step as the first one in its process: in measure(), moreh's first step runs first and
    pays what both devices pay once per process (oneDNN building its kernels for these shapes, the heap
    growing), so CPU's first step there is a warm one."""
    import torch

    cpu, _, _, _ = build(script, cfg)
    t = time.perf_counter()
    cpu.step()
    return {"cpu_first_step_alone_ms": (time.perf_counter() - t) * 1e3}


def child(cfg):
    import torch

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.cpu_first_alone:
        print("JSON " + json.dumps(cpu_first_alone(cfg.child, cfg)), flush=True)
        return
    build = moreh_build()  # before measuring: the file may be replaced while the benchmark runs
    result = measure(cfg.child, cfg)
    result["build"] = build
    print("JSON " + json.dumps(result), flush=True)


# ============================ the driver (parent process) ===========================================
def run_child(script, cfg, extra=()):
    env = dict(os.environ)
    if script == "gpt2-dp4":
        env["MOREH_NUM_DEVICES"] = str(DP_DEVICES)
        env.pop("MOREH_FLAVOR", None)  # the device count decides the flavor
    args = ["--child", script, "--steps", str(cfg.steps), "--repeats", str(cfg.repeats), "--warmup", str(cfg.warmup)]
    if cfg.quick:
        args.append("--quick")
    if cfg.threads:
        args += ["--threads", str(cfg.threads)]
    args += list(extra)
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), *args], env=env, capture_output=True,
                          text=True, timeout=1800)
    wall = time.perf_counter() - t
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("JSON ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(f"--- {script} failed (exit {proc.returncode}); its stdout and stderr:\n"
                         f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}\n")
        return None
    result = json.loads(lines[-1][len("JSON "):])
    result["process_wall_s"] = wall
    return result


def print_table(results):
    cols = f"{'script':<12} {'device':<10} {'ms/step':>9} {'first ms':>9} {'misses':>6} {'graphs/st':>9} " \
           f"{'ops/step':>8} {'eager/st':>8} {'csw/step':>8} {'minflt/st':>9} {'first loss':>11}"
    print(cols)
    print("-" * len(cols))
    for r in results:
        c, m = r["cpu"], r["moreh"]
        print(f"{r['script']:<12} {'cpu':<10} {c['ms_per_step']:>9.2f} {c['first_step_ms']:>9.1f} {'':>6} {'':>9} "
              f"{'':>8} {'':>8} {c['csw_per_step']:>8.1f} {c['minflt_per_step']:>9.1f} {c['first_loss']:>11.6f}")
        print(f"{'':<12} {'moreh':<10} {m['ms_per_step']:>9.2f} {m['first_step_ms']:>9.1f} {m['cache_misses']:>6} "
              f"{m['graphs_per_step']:>9.2f} {m['recorded_ops_per_step']:>8.0f} {m['eager_ops_per_step']:>8.1f} "
              f"{m['csw_per_step']:>8.1f} {m['minflt_per_step']:>9.1f} {m['first_loss']:>11.6f}")
        print(f"{'':<12} {'moreh/cpu':<10} {r['ratio_step']:>9.3f} {r['ratio_first_step']:>9.2f}   "
              f"first-loss rel diff {r['first_loss_rel_diff']:.1e} ({'ok' if r['first_loss_ok'] else 'MISMATCH'}), "
              f"largest over all steps {r['loss_gap_max']:.1e}")
    print("first step with each device first in its process (moreh's above; CPU's in a process of its own), "
          "moreh/cpu: " + ", ".join(f"{r['script']} {r['moreh']['first_step_ms']:.1f}/"
                                    f"{r['cpu']['first_step_alone_ms']:.1f} ms = {r['ratio_first_step_each_first']:.2f}"
                                    for r in results))
    print("ratio of the fastest repeats (min ms/step, moreh/cpu): " + ", ".join(
        f"{r['script']} {r['moreh']['ms_per_step_min'] / r['cpu']['ms_per_step_min']:.3f}" for r in results))
    builds = {(r["build"]["git_head"], r["build"]["library_mtime"]) for r in results}
    print("moreh build: " + "; ".join(f"git {h}, _C built {t}" for h, t in sorted(builds))
          + (" (the library changed between scripts!)" if len(builds) > 1 else ""))
    for r in results:
        print(f"{r['script']}: {r['describe']}; {r['num_devices']} host device(s) ({r['flavor']}), "
              f"{r['threads']} intra-op threads, {r['cpus']} cores; moreh first step: "
              f"{r['moreh']['first_step_graphs']} graph(s), {r['moreh']['first_step_recorded_ops']} ops recorded, "
              f"plan compile {r['moreh']['first_step_compile_ms']:.2f} ms; cache misses in warm-up "
              f"{r['moreh']['cache_misses_warmup']}; replay host (mean, all devices) "
              f"{r['moreh']['replay_host_ms_per_step']:.2f} ms/step; ms/step per repeat cpu {fmt_list(r['cpu']['ms_per_step_repeats'])} moreh "
              f"{fmt_list(r['moreh']['ms_per_step_repeats'])}")
        if r["cpu"]["moreh_counter_changes"]:
            print(f"  WARNING: CPU steps changed moreh's counters: {r['cpu']['moreh_counter_changes']}")
        col = r.get("collectives")
        if col:
            ratio = f"{col['ratio_to_ideal']:.4f}" if col["ratio_to_ideal"] is not None else "-"
            print(f"  collectives: {col['bytes_per_step_per_device']:.0f} bytes/step per device "
                  f"({col['bytes_per_step_total']:.0f} over all {r['num_devices']}), ring ideal "
                  f"2(N-1)/N x {col['param_bytes']} parameter bytes = {col['ideal_per_device']:.0f}, "
                  f"ratio {ratio}; replicated fallbacks {col['replicated_fallbacks_per_step']:.1f}/step "
                  f"({col['replicated_fallbacks_total']} in the process)")


def fmt_list(xs):
    return "/".join(f"{x:.1f}" for x in xs)


def main(argv=None):
    cfg = parse_args(argv)
    if cfg.child:
        return child(cfg)
    print(f"real scripts, moreh vs CPU eager in one process per script: {cfg.warmup} warm-up + {cfg.steps} timed "
          f"steps x {cfg.repeats} repeats per device (median){', quick sizes' if cfg.quick else ''}", flush=True)
    results, failed = [], []
    head = git_head()
    for script in cfg.scripts:
        r = run_child(script, cfg)
        if r is None:
            failed.append(script)
            continue
        r["build"]["git_head"] = head  # the checkout's commit; uncommitted changes may be built in
        alone = run_child(script, cfg, ["--cpu-first-alone"])
        if alone is None:
            failed.append(script + " (CPU's first step alone)")
            continue
        r["cpu"]["first_step_alone_ms"] = alone["cpu_first_step_alone_ms"]
        r["ratio_first_step_each_first"] = r["moreh"]["first_step_ms"] / alone["cpu_first_step_alone_ms"]
        results.append(r)
        print("JSON " + json.dumps(r), flush=True)
    print()
    if results:
        print_table(results)
    bad = [r["script"] for r in results if not r["first_loss_ok"]]
    if bad:
        print(f"first-step loss MISMATCH (> {LOSS_RTOL:g} relative) in: {', '.join(bad)}")
    if failed:
        print(f"FAILED: {', '.join(failed)}")
    return 1 if failed or bad else 0


if __name__ == "__main__":
    sys.exit(main())
