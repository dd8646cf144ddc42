"""torch.moreh.option.set_parallelism and MOREH_PARALLELISM: a parallel layout chosen by hand as MoAI's
configuration line (seed 000), checked before anything changes, logged, dumped and shown in the rank table.
Every knob composes; what the devices cannot hold (or a malformed field) is refused by name."""
import os
import subprocess
import sys

DUMP = "advanced_parallelization_selected_config.dump"
DEFAULT = ("num_stages : 1, num_micro_batches : 1, batch_per_device : 0, No TP, recomputation : 0, "
           "distribute_param : false, distribute_low_prec_param : false")
SEED = ("num_stages : 2, num_micro_batches : 4, batch_per_device : 1, No TP, recomputation : 0, "
        "distribute_param : true, distribute_low_prec_param : false")


def run(code, cwd, devices=4, parallelism=None):
    env = dict(os.environ, MOREH_NUM_DEVICES=str(devices))
    env.pop("MOREH_FLAVOR", None)
    env.pop("MOREH_PARALLELISM", None)
    if parallelism is not None:
        env["MOREH_PARALLELISM"] = parallelism
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=300)


def test_a_layout_chosen_by_hand_is_logged_dumped_and_shown_in_the_rank_table(tmp_path):
    code = r"""
import torch
assert torch.moreh.option.get_parallelism().startswith("num_stages : 1,")
x = torch.arange(8.).reshape(4, 2).to("moreh")
torch.moreh.option.set_parallelism(batch_per_device=2)
print(torch.moreh.option.get_parallelism())
w = torch.ones(2, 3).to("moreh").requires_grad_()
(x @ w).sum().backward()
print(w.grad.tolist(), x.tolist()[3])
"""
    proc = run(code, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = DEFAULT.replace("batch_per_device : 0", "batch_per_device : 2")
    out = proc.stdout.splitlines()
    assert out[0] == line
    assert out[1] == "[[12.0, 12.0, 12.0], [16.0, 16.0, 16.0]] [6.0, 7.0]"
    assert (tmp_path / DUMP).read_text() == line + "\n"
    log = proc.stderr
    assert "[info] Configuration for parallelism is selected.\n" in log
    assert f"[info] {line}\n" in log
    assert "[info] The number of devices is 4." in log
    assert "[0/3]: [dp:0/3] host:0" in log and "[3/3]: [dp:3/3] host:3" in log


def test_the_dump_line_pastes_back_and_moreh_parallelism_takes_it(tmp_path):
    (tmp_path / "first").mkdir()
    proc = run("import torch; torch.moreh.option.set_parallelism()", tmp_path / "first", devices=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = (tmp_path / "first" / DUMP).read_text().strip()
    assert line == DEFAULT
    code = "import torch; print(torch.moreh.option.get_parallelism()); torch.moreh.option.set_parallelism(%r)" % line
    proc = run(code, tmp_path, devices=2, parallelism=line)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == line
    assert proc.stderr.count("Configuration for parallelism is selected.") == 2  # at start, then set again
    assert (tmp_path / DUMP).read_text() == line + "\n"


def test_what_cannot_run_is_refused_before_anything_changes(tmp_path):
    code = r"""
import torch
from torch_moreh._C import ConfigError
x = torch.arange(3.).to("moreh")
for args, kwargs in [((%r,), {}), ((), {"tp": 0, "num_stages": 2}), ((), {"num_stages": 8}),
                     ((), {"num_stages": 3}), ((), {"num_micro_batches": 2, "tp": 8}), ((), {"recomputation": True, "tp": 3}),
                     ((), {"distribute_low_prec_param": True, "num_micro_batches": 0}),
                     (("num_stages : two",), {}), (("num_stage : 2",), {}), ((), {"num_micro_batches": 2.5})]:
    try:
        torch.moreh.option.set_parallelism(*args, **kwargs)
        print("accepted", args, kwargs)
    except ConfigError as e:
        print("ConfigError:", e)
print(torch.moreh.option.get_parallelism())
print(x.tolist())
""" % SEED.replace("No TP", "TP : 4")
    proc = run(code, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout.splitlines()
    assert all(o.startswith("ConfigError: ") for o in out[:10]), out
    assert "num_stages : 2 x TP : 4 = 8 does not divide the 4 devices" in out[0]
    assert "TP must be an integer of at least 1, got '0'" in out[1]
    assert "num_stages : 8 needs at least 8 devices; the virtual device has 4" in out[2]
    assert "num_stages : 3 x TP : 1 = 3 does not divide the 4 devices" in out[3]
    assert "TP : 8 needs at least 8 devices; the virtual device has 4" in out[4]
    assert "num_stages : 1 x TP : 3 = 3 does not divide the 4 devices" in out[5]
    assert "num_micro_batches must be an integer of at least 1, got '0'" in out[6]
    assert "num_stages must be an integer of at least 1, got 'two'" in out[7]
    assert "unknown field 'num_stage'" in out[8]
    assert "num_micro_batches must be an integer of at least 1, got '2.5'" in out[9]
    assert out[10] == DEFAULT and out[11] == "[0.0, 1.0, 2.0]"
    assert not (tmp_path / DUMP).exists()
    assert "Configuration for parallelism is selected." not in proc.stderr


def test_a_bad_moreh_parallelism_names_the_variable_and_the_field(tmp_path):
    proc = run("import torch", tmp_path, parallelism="num_stages : 2, TP : two")
    assert proc.returncode != 0
    assert "MOREH_PARALLELISM='num_stages : 2, TP : two' is not valid: parallel configuration: TP must be an " \
           "integer of at least 1, got 'two'" in proc.stderr
    proc = run("import torch", tmp_path, parallelism="num_stages : 2, num_micro_batches : 2, TP : 4")
    assert proc.returncode != 0
    assert "num_stages : 2 x TP : 4 = 8 does not divide the 4 devices" in proc.stderr
    assert not (tmp_path / DUMP).exists()


def test_the_pipeline_schedule_is_moreh_s_own_field(tmp_path):
    """1F1B by default; `pipeline_schedule="gpipe"` (the line's `pipeline_schedule : gpipe`, dumped only when
    chosen, so that MoAI's own lines paste back unchanged) picks GPipe; anything else is refused."""
    code = r"""
import torch
from torch_moreh._C import ConfigError
torch.moreh.option.set_parallelism(num_stages=2, num_micro_batches=2, pipeline_schedule="gpipe")
print(torch.moreh.option.get_parallelism())
try:
    torch.moreh.option.set_parallelism(num_stages=2, pipeline_schedule="zigzag")
except ConfigError as e:
    print("ConfigError:", e)
print(torch.moreh.option.get_parallelism())
"""
    proc = run(code, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout.splitlines()
    line = DEFAULT.replace("num_stages : 1, num_micro_batches : 1", "num_stages : 2, num_micro_batches : 2") + \
        ", pipeline_schedule : gpipe"
    assert out[0] == line
    assert "pipeline_schedule must be 1f1b or gpipe, got 'zigzag'" in out[1]
    assert out[2] == line
    assert (tmp_path / DUMP).read_text() == line + "\n"
