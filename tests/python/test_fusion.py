"""Elementwise fusion (MOREH_FUSION=on): nodes run as generated kernels, here by the host evaluator, and give
what CPU eager gives. Each test runs in a fresh interpreter: the engine reads MOREH_FUSION once."""
import json

import pytest

from conftest import run_python

FUSED = {"MOREH_FUSION": "on"}


def run_json(code, env):
    proc = run_python(code, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


# Every case is an expression of several elementwise ops; it must fuse, and match CPU eager.
OPS_SCRIPT = r'''
import json, torch, torch.nn.functional as F, torch_moreh
torch.manual_seed(0)
x, y, z = torch.randn(4, 5), torch.randn(4, 5), torch.randn(4, 5)
b, s = torch.randn(5), torch.randn(())
mask = torch.rand(4, 5) > 0.5
i = torch.randint(-3, 4, (4, 5))
cases = {
    "chain": lambda x, y, z, b, s, mask, i: (x + y * 2).relu().sigmoid() - z.tanh(),
    "broadcast": lambda x, y, z, b, s, mask, i: (x + b) * s - b.exp(),
    "where": lambda x, y, z, b, s, mask, i: torch.where(x > 0, x, y * 0.5) + 1,
    "masked_fill": lambda x, y, z, b, s, mask, i: (x * 3).masked_fill(mask, -1e4) + y,
    "lerp": lambda x, y, z, b, s, mask, i: torch.lerp(x, y, 0.3) + torch.lerp(y, z, 0.7),
    "addcmul_addcdiv": lambda x, y, z, b, s, mask, i: torch.addcdiv(torch.addcmul(x, y, z, value=0.5), y, z.abs() + 1, value=-0.1),
    "activations": lambda x, y, z, b, s, mask, i: F.gelu(x) * F.silu(y) + F.gelu(z, approximate="tanh") + torch.erf(x),
    "pow": lambda x, y, z, b, s, mask, i: x.pow(2) + x.pow(3) + x.abs().pow(0.5) + x.abs().add(1).pow(-1),
    "clamp": lambda x, y, z, b, s, mask, i: x.clamp(-0.5, 0.5) + y.clamp(min=0.1) + z.clamp(max=0.2),
    "logs": lambda x, y, z, b, s, mask, i: (x.exp() + 1).log().rsqrt().sqrt().reciprocal().neg().abs(),
    "integers": lambda x, y, z, b, s, mask, i: ((i * 3 + 1) - i).maximum(i).minimum(i + 5),
    "compare": lambda x, y, z, b, s, mask, i: ((x > y) | (i == 2)) & (x <= 0.5),
    "int_to_float": lambda x, y, z, b, s, mask, i: i / 2 + x,
    "bfloat16": lambda x, y, z, b, s, mask, i: ((x.bfloat16() * 1.5 + y.bfloat16()).tanh() * 0.1).float() + z,
    "float16": lambda x, y, z, b, s, mask, i: (x.half() - y.half()).sigmoid().float() * 2 - 1,
    "float64": lambda x, y, z, b, s, mask, i: (x.double() * y.double()).exp() - 1,
    "in_place": lambda x, y, z, b, s, mask, i: x.clone().mul_(0.9).add_(y, alpha=-0.1).addcmul_(z, z, value=0.01),
    "copy_cast": lambda x, y, z, b, s, mask, i: torch.zeros(4, 5, dtype=torch.bfloat16, device=x.device).copy_(x * 2).float() + 1,
    "logic": lambda x, y, z, b, s, mask, i: (((x > 0) & (y < 0)) | ~(z > 0.5)) ^ mask,
    "out_forms": lambda x, y, z, b, s, mask, i: torch.eq(x > 0, y > 0, out=torch.empty(4, 5, dtype=torch.bool, device=x.device)) & torch.mul(x, y, out=torch.empty(4, 5, device=x.device)).gt(0),
    "logical": lambda x, y, z, b, s, mask, i: torch.logical_and(i, x > 0).logical_or(torch.logical_not(y > 1)),
    "leaky_hardtanh": lambda x, y, z, b, s, mask, i: F.leaky_relu(x, 0.2) + F.hardtanh(y, -0.5, 0.5) * z,
    # 2**60 + 1 is not a double: that multiply runs as ATen's kernel, exactly; the rest still fuses
    "big_integer": lambda x, y, z, b, s, mask, i: (i * (2 ** 60 + 1) - i) * 2 + (i - 1) * 3,
}
out = {}
for name, fn in cases.items():
    args = (x, y, z, b, s, mask, i)
    ref = fn(*args)
    got = fn(*(t.to("moreh") for t in args)).cpu()
    stats = torch_moreh._C._stats()
    tol = dict(rtol=1e-2, atol=1e-2) if name in ("bfloat16", "float16", "copy_cast") else dict(rtol=1e-5, atol=1e-6)
    if name == "big_integer":
        tol = dict(rtol=0, atol=0)
    try:
        torch.testing.assert_close(got, ref, **tol)
        err = None
    except AssertionError as e:
        err = str(e)
    out[name] = {"fused": stats["last_fused_ops"], "error": err, "dtype": str(got.dtype) == str(ref.dtype)}
print(json.dumps(out))
'''


def test_fused_elementwise_ops_match_eager():
    out = run_json(OPS_SCRIPT, FUSED)
    for name, r in out.items():
        assert r["error"] is None, f"{name}: {r['error']}"
        assert r["dtype"], name
        assert r["fused"] >= 2, f"{name}: only {r['fused']} ops ran fused"


GRAD_SCRIPT = r'''
import json, torch, torch.nn.functional as F, torch_moreh
torch.manual_seed(0)
x = torch.randn(6, 7)
def f(x):
    return (F.gelu(x) + F.gelu(x, approximate="tanh") + torch.tanh(x) + torch.sigmoid(x) + F.silu(x) + F.relu(x) * x
            + F.leaky_relu(x, 0.1) * 2 + F.hardtanh(x, -0.7, 0.6) * x).sum()
res = {}
for dev in ("cpu", "moreh"):
    t = x.to(dev).detach().requires_grad_()
    f(t).backward()
    res[dev] = t.grad.cpu()
print(json.dumps({"diff": (res["cpu"] - res["moreh"]).abs().max().item(), "fused": torch_moreh._C._stats()["last_fused_ops"]}))
'''


def test_fused_activation_backwards_match_eager():
    out = run_json(GRAD_SCRIPT, FUSED)
    assert out["diff"] < 1e-5
    assert out["fused"] >= 5  # the backward ops of the activations and the sums of their gradients


TRAIN_SCRIPT = r'''
import copy, json, sys, torch, torch.nn.functional as F, torch_moreh, importlib.util
spec = importlib.util.spec_from_file_location("b", "bench/bench_gpu_gpt2.py")
b = importlib.util.module_from_spec(spec); spec.loader.exec_module(b)
bf16 = sys.argv[1] == "bf16" if len(sys.argv) > 1 else BF16
torch.manual_seed(0)
base = b.GPT(64, 16, 32, 2, 2)
def train(dev, steps=4):
    m = copy.deepcopy(base).to(dev)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.1)
    g = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(steps):
        x = torch.randint(0, 64, (2, 16), generator=g).to(dev)
        y = torch.randint(0, 64, (2, 16), generator=g).to(dev)
        with torch.autocast(device_type=torch.device(dev).type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(m(x).view(-1, 64), y.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses, [p.detach().cpu() for p in m.parameters()]
lc, pc = train("cpu")
lm, pm = train("moreh")
s = torch_moreh._C._stats()
kernels = torch_moreh._C._fused_kernels()
try:
    compiled = len(torch_moreh._C._compile_fused_kernels(90))
except RuntimeError as e:
    compiled = str(e)
gpu = torch.moreh.get_device_properties().physical_device.startswith("cuda")
print(json.dumps({"cpu": lc, "moreh": lm, "gpu": gpu, "param_diff": max((a - b).abs().max().item() for a, b in zip(pc, pm)),
                  "ops": s["last_graph_ops"], "launches": s["last_launches"], "fused": s["last_fused_ops"],
                  "kernels": len(kernels), "compiled": compiled,
                  "max_parameter_bytes": max(k["parameter_bytes"] for k in kernels)}))
'''


@pytest.mark.parametrize("dtype,devices", [("fp32", 1), ("bf16", 1), ("fp32", 2)])
def test_gpt_training_with_fusion_matches_cpu(dtype, devices):
    # With 2 devices the batch is split by rows and each device's program is fused (scheduler/fusion/program_fusion.h).
    out = run_json(TRAIN_SCRIPT.replace("BF16", str(dtype == "bf16")), dict(FUSED, MOREH_NUM_DEVICES=str(devices)))
    rel, atol = (1e-5, 2e-5) if dtype == "fp32" else (1e-3, 2e-3)
    if out["gpu"]:  # CUDA's kernels (matmuls, reductions) sum in other orders than CPU's
        rel, atol = max(rel, 1e-4), max(atol, 2e-4)
    for a, b in zip(out["cpu"], out["moreh"]):
        assert abs(a - b) <= rel * abs(a), (out["cpu"], out["moreh"])
    assert out["param_diff"] < atol
    # The optimizer's per-parameter updates and the activations' pieces fuse: far fewer launches than ops.
    assert out["fused"] > out["ops"] // 2
    assert out["launches"] < out["ops"] // 2
    # Every kernel of the real step compiles for an H100 (NVRTC, no GPU needed) and fits CUDA's 4 KiB of
    # kernel parameters.
    assert out["max_parameter_bytes"] <= 4096
    if out["compiled"] != "this build of moreh has no NVRTC":
        assert out["compiled"] == out["kernels"], out["compiled"]


MEMORY_SCRIPT = r'''
import json, torch, torch_moreh
x = torch.randn(1 << 18).to("moreh")
torch.moreh.synchronize()
torch.moreh.reset_peak_memory_stats()
base = torch.moreh.memory_allocated()
y = x
for k in range(8):
    y = (y * 1.01 + 0.5).tanh()
r = y.sum().item()
print(json.dumps({"peak": torch.moreh.max_memory_allocated() - base, "sum": r}))
'''


def test_values_only_the_kernel_reads_take_no_memory():
    fused = run_json(MEMORY_SCRIPT, FUSED)
    plain = run_json(MEMORY_SCRIPT, {"MOREH_FUSION": "off"})
    assert abs(fused["sum"] - plain["sum"]) <= 1e-4 * abs(plain["sum"])
    one = 4 << 18
    assert fused["peak"] < one + 1024     # the chain's result (and the sum's)
    assert plain["peak"] >= 2 * one       # unfused, each op's result exists beside its input


def test_intermediates_the_script_keeps_are_stored():
    out = run_json(r'''
import json, torch, torch_moreh
x = torch.randn(3, 4)
m = x.to("moreh")
a = m.exp()
b = a * 2 + 1
c = b.tanh()
print(json.dumps({"a": (a.cpu() - x.exp()).abs().max().item(), "b": (b.cpu() - (x.exp() * 2 + 1)).abs().max().item(),
                  "c": (c.cpu() - (x.exp() * 2 + 1).tanh()).abs().max().item()}))
''', FUSED)
    assert max(out.values()) < 1e-5


def test_fusion_defaults_to_gpus_only_and_checks_its_variable():
    out = run_json("import json, torch, torch_moreh; (torch.ones(2).to('moreh') * 2 + 1).cpu(); "
                   "print(json.dumps([torch_moreh._C._stats()['fusion'], "
                   "torch.moreh.get_device_properties().physical_device]))", {"MOREH_FUSION": ""})
    fusion, device = out
    assert fusion == device.startswith("cuda"), out
    proc = run_python("import torch; torch.ones(1).to('moreh').cpu()", env={"MOREH_FUSION": "maybe"})
    assert proc.returncode != 0
    assert "MOREH_FUSION" in proc.stderr and "auto, on or off" in proc.stderr


def test_fusion_can_be_turned_off_and_on_in_a_process():
    out = run_json(r'''
import json, torch, torch_moreh
x = torch.randn(64).to("moreh")
res = []
for on in (True, False, True):
    (torch.moreh.option.enable_fusion if on else torch.moreh.option.disable_fusion)()
    assert torch.moreh.option.is_fusion_enabled() == on
    y = ((x * 2 + 1).tanh() - x).cpu()
    s = torch_moreh._C._stats()
    res.append([s["fusion"], s["last_fused_ops"], s["last_launches"], s["last_graph_ops"], y.tolist()])
print(json.dumps(res))
''', FUSED)
    (on1, fused1, launches1, ops1, y1), (off, fused0, launches0, ops0, y0), (on2, fused2, _, _, y2) = out
    assert on1 and not off and on2
    assert fused1 == 4 and launches1 == 1 and fused0 == 0 and launches0 == ops0 == 4 and fused2 == 4
    assert max(abs(a - b) for a, b in zip(y1, y0)) < 1e-6 and y1 == y2


# Random programs of elementwise ops, in place and not, over views, with unfused ops between: the grouping's
# ordering rules (a group runs where its last node stood) must give eager's values for every tensor kept.
FUZZ_SCRIPT = r'''
import json, random, torch, torch_moreh
rng = random.Random(SEED)
def program(r):
    shapes = [(4, 6), (6,), (3, 4, 6)]
    shape_of, lines = {}, []
    def var():
        return r.choice(list(shape_of))
    def into(a):  # a tensor that broadcasts into a's shape (for in-place ops on a)
        fits = [n for n, s in shape_of.items() if len(s) <= len(shape_of[a]) and shape_of[a][len(shape_of[a]) - len(s):] == s]
        return r.choice(fits)
    def wider(a, b):
        return max(shape_of[a], shape_of[b], key=len)
    for k in range(4):
        s = shapes[k % 3] if k < 3 else r.choice(shapes)
        lines.append(f"v{k} = (torch.arange({int(torch.tensor(s).prod())}, dtype=torch.float32).reshape({s}) * {r.uniform(-0.1, 0.1):.4f} + {r.uniform(-1, 1):.3f}).to(dev)")
        shape_of[f"v{k}"] = s
    for step in range(r.randint(8, 16)):
        a, b = var(), var()
        kind = r.randrange(9)
        n = f"t{step}"
        if kind == 0:
            lines.append(f"{n} = ({a} * {r.uniform(0.5, 1.5):.3f} + {b}).tanh()")
        elif kind == 1:
            lines.append(f"{n} = torch.where({a} > 0, {a}, {b} * 0.5) - {b}.sigmoid()")
        elif kind == 2:
            lines.append(f"{a}.mul_({r.uniform(0.5, 1.5):.3f}).add_({into(a)}, alpha={r.uniform(-1, 1):.3f})")
            continue
        elif kind == 3:
            b = into(a)
            lines.append(f"{a}.addcmul_({b}, {b}, value={r.uniform(-0.5, 0.5):.3f})")
            continue
        elif kind == 4:  # a window of a tensor written in place
            lines.append(f"{a}.view(-1)[:3].mul_(-2.0)")
            continue
        elif kind == 5:  # an unfused op reads in between
            lines.append(f"{n} = {a} - {a}.sum() / 100 + {b}")
        elif kind == 6:  # a transposed or broadcast read
            lines.append(f"{n} = {a}.exp() * ({b}.transpose(-1, -2).contiguous().transpose(-1, -2) if {b}.dim() > 1 else {b})")
        elif kind == 7:
            lines.append(f"{a}.copy_({into(a)}.abs().sqrt())")
            continue
        else:
            lines.append(f"{a}.clamp_(-2, 2)")
            continue
        shape_of[n] = wider(a, b)
        if r.random() < 0.3 and len(shape_of) > 5:
            victim = r.choice([x for x in shape_of if x.startswith("t")])
            del shape_of[victim]
            lines.append(f"del {victim}")
    return lines, list(shape_of)
bad = []
fused = 0
for p in range(PROGRAMS):
    lines, names = program(rng)
    outs = {}
    for dev in ("cpu", "moreh"):
        env = {"torch": torch, "dev": dev}
        try:
            exec("\n".join(lines), env)
            outs[dev] = [env[n].cpu() if n in env else None for n in names]
        except Exception as e:  # shape mismatches of the random program: the same on both devices
            outs[dev] = type(e).__name__
    fused += torch_moreh._C._stats()["last_fused_ops"]
    a, b = outs["cpu"], outs["moreh"]
    if isinstance(a, str) or isinstance(b, str):
        if a != b:
            bad.append([p, "\n".join(lines), str(a)[:200], str(b)[:200]])
        continue
    for n, x, y in zip(names, a, b):
        if x is not None and not torch.allclose(x, y, rtol=1e-5, atol=1e-5, equal_nan=True):
            bad.append([p, "\n".join(lines), n, (x - y).abs().max().item()])
            break
print(json.dumps({"bad": bad[:3], "fused": fused}))
'''


@pytest.mark.parametrize("devices", [1, 2])
def test_random_elementwise_programs_match_eager(devices):
    out = run_json(FUZZ_SCRIPT.replace("SEED", str(6 + devices)).replace("PROGRAMS", "150"),
                   dict(FUSED, MOREH_NUM_DEVICES=str(devices)))
    assert not out["bad"], out["bad"]
    assert out["fused"] > 100


@pytest.mark.parametrize("min_ops,fused", [("2", 0), ("1", 1)])
def test_single_ops_become_kernels_only_when_asked(min_ops, fused):
    out = run_json(r'''
import json, torch, torch_moreh
x = torch.randn(5, 3)
y = x.to("moreh").exp().cpu()
print(json.dumps([torch_moreh._C._stats()["last_fused_ops"], (y - x.exp()).abs().max().item()]))
''', dict(FUSED, MOREH_FUSION_MIN_OPS=min_ops))
    assert out[0] == fused and out[1] < 1e-6


# Under autocast every Linear casts its weight to bfloat16 right before its matmul: no chain forms, but the
# weights hold their values from the step's start, so the casts of one shape run as one early kernel.
def test_autocast_weight_casts_of_one_shape_share_one_kernel():
    out = run_json(r'''
import json, torch, torch_moreh
torch.manual_seed(0)
model = torch.nn.Sequential(*[torch.nn.Linear(16, 16, bias=False) for _ in range(4)])
x = torch.randn(8, 16)
with torch.autocast("cpu", dtype=torch.bfloat16):
    ref = model(x).float()
model.to("moreh")
xm = x.to("moreh")
torch.moreh.synchronize()
with torch.autocast("moreh", dtype=torch.bfloat16):
    got = model(xm).float()
got = got.cpu()
s = torch_moreh._C._stats()
print(json.dumps({"fused": s["last_fused_ops"], "launches": s["last_launches"], "ops": s["last_graph_ops"],
                  "err": (got - ref).abs().max().item(), "scale": ref.abs().max().item()}))
''', FUSED)
    assert out["fused"] == 4, out     # the four weight casts, in one kernel
    assert out["launches"] == out["ops"] - 3, out
    assert out["err"] <= 1e-2 * out["scale"], out
