"""Which parallel layout, and how fast, for Llama-3-8B on GPUs this machine does not have?

Plan-only mode records a training step and plans it without running it: the model is built on the moreh device
(its parameters take no memory here), Advanced Parallelization searches the layouts of the flavor's devices
against a GPU's profile, and the selection and its predicted throughput come back in seconds.

    MOREH_PLAN_ONLY=1 MOREH_DEVICE_PROFILE=h100 MOREH_NUM_DEVICES=16 python examples/plan_llama.py --batch-size 64

(seed 003's runs: batch 16 on 4 GPUs, 64 and 512 on 16, 1024 tokens per sample, bf16 autocast.) `--tiny` plans a
two-layer model of the same shape family instead, for a quick look. `--parallelism LINE` plans that one layout (MoAI's
configuration line, as MOREH_PARALLELISM takes it) instead of searching, and prints its plan and peak per device.
"""
import argparse
import json
import os
import time

# The question is asked anew each run: search every layout (a selection kept from an earlier run would skip
# the search, and with it the candidates and their predictions this script prints).
os.environ.setdefault("MOREH_AP_CACHE", "0")

import torch  # noqa: E402  (after the setting above: the engine reads it when it starts)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--tiny", action="store_true", help="2 layers, hidden 256: the same ops, a small graph")
    p.add_argument("--parallelism", metavar="LINE", help="plan this layout (e.g. 'TP : 4') instead of searching")
    p.add_argument("--json", help="write the selection and prediction here")
    args = p.parse_args()
    import transformers

    if os.environ.get("MOREH_PLAN_ONLY") != "1":
        print("note: MOREH_PLAN_ONLY is not 1: the step runs for real on this machine's devices")
    if args.tiny:
        cfg = transformers.LlamaConfig(vocab_size=1024, hidden_size=256, intermediate_size=896, num_hidden_layers=2,
                                       num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=2048)
    else:  # Llama-3-8B
        cfg = transformers.LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                                       num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                                       max_position_embeddings=8192, rope_theta=500000.0)
    cfg._attn_implementation = "sdpa"
    if args.parallelism:
        torch.moreh.option.set_parallelism(args.parallelism)
    else:
        torch.moreh.option.enable_advanced_parallelization()
    start = time.time()
    with torch.device("moreh"):
        model = transformers.LlamaForCausalLM(cfg)
    # The parameters' initialisation is a step of its own (on device 0, where values written outside a training
    # step live): the training step then starts from parameters that exist, as every later step does, and AP
    # plans that step rather than one that also creates the model.
    torch.moreh.synchronize()
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    ids = torch.randint(0, cfg.vocab_size, (args.batch_size, args.seq_len)).to("moreh")
    with torch.autocast("moreh", dtype=torch.bfloat16):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    if args.parallelism:
        try:
            opt.step()  # the step graph ends here: planned under the layout asked for
        except torch.OutOfMemoryError as e:  # the layout does not fit: say what it needs, against what
            first = str(e).splitlines()
            raise SystemExit(f"layout {args.parallelism!r} does not fit: " + "; ".join(
                line.strip("> ").strip() for line in first[1:4]))
        return report_layout(args, params, time.time() - start)
    opt.step()  # the step graph ends here: AP searches and selects
    search = torch.moreh.option.advanced_parallelization_candidates()
    elapsed = time.time() - start
    if not search or search["selected"] < 0:
        raise SystemExit("no layout was selected (see the log and advanced_parallelization_candidates.json)")
    chosen = search["candidates"][search["selected"]]
    devices = torch.moreh.physical_devices()
    result = {"params": params, "devices": len(devices), "profile": torch.moreh.option.device_profile()["name"],
              "batch_size": args.batch_size, "seq_len": args.seq_len, "config": chosen["config"],
              "predicted_step_ms": chosen["step_ms"], "predicted_tokens_per_s": chosen["tokens_per_s"],
              "peak_gib_per_device": max(chosen["peak_bytes"]) / 2**30, "candidates": len(search["candidates"]),
              "feasible": sum(1 for c in search["candidates"] if not c["dropped"]),
              "slower_not_compiled": sum(1 for c in search["candidates"] if c.get("dominance") == "slower"),
              "planning_s": elapsed}
    skipped = (f" ({result['slower_not_compiled']} more with recomputation not compiled: the same layout fits "
               "without it)" if result["slower_not_compiled"] else "")
    print(f"{count(params)} parameters, batch {args.batch_size} x {args.seq_len} tokens on {len(devices)} x "
          f"{result['profile']}: {result['feasible']} of {result['candidates']} layouts fit{skipped}")
    print(f"selected: {chosen['config']}")
    print(f"predicted: {chosen['step_ms']:.0f} ms per step, {chosen['tokens_per_s']:.0f} tokens/s, "
          f"{result['peak_gib_per_device']:.1f} GiB peak per device; planned in {elapsed:.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


def count(params):
    return f"{params / 1e9:.2f}B" if params >= 1e9 else f"{params / 1e6:.1f}M"


def report_layout(args, params, elapsed):
    """The plan of the layout asked for: its log line and each device's peak."""
    torch.moreh.synchronize()  # the step is planned (not run) here
    plan = torch.moreh.last_plan()
    devices = torch.moreh.physical_devices()
    peak = max(plan["peak_bytes"]) if plan.get("peak_bytes") else 0
    capacity = devices[0].get("memory_total", 0) if devices else 0
    result = {"params": params, "devices": len(devices), "profile": torch.moreh.option.device_profile()["name"],
              "batch_size": args.batch_size, "seq_len": args.seq_len, "config": args.parallelism,
              "plan": plan.get("summary", ""), "peak_gib_per_device": peak / 2**30, "planning_s": elapsed}
    print(f"{count(params)} parameters, batch {args.batch_size} x {args.seq_len} tokens on {len(devices)} x "
          f"{result['profile']}, layout {args.parallelism!r}")
    print(f"plan: {result['plan']}")
    print(f"peak: {result['peak_gib_per_device']:.1f} GiB per device (beyond what the devices held before the step)"
          + (f" of {capacity / 2**30:.1f}" if capacity else "") + f"; planned in {elapsed:.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
