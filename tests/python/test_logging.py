"""The log: spdlog lines '[YYYY-mm-dd HH:MM:SS.mmm] [level] message', MOREH_LOG_LEVEL, a log file."""
import re

from conftest import run_python

LINE = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\] \[(trace|debug|info|warning|error|critical)\] .+")

STEPS = """
import torch
w = torch.ones(4, device="moreh")
for _ in range(3):
    (w * 2).sum().item()
"""


def test_log_format_levels_and_file(tmp_path):
    log_file = tmp_path / "moreh.log"
    proc = run_python(STEPS, env={"MOREH_LOG_LEVEL": "debug", "MOREH_LOG_FILE": str(log_file)})
    assert proc.returncode == 0, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert lines and all(LINE.match(l) for l in lines), lines
    assert sum("moreh log file: " + str(log_file) in l for l in lines) == 1
    assert any("[info] Step graph" in l and "compiled in" in l for l in lines)  # a miss, at info
    assert any("[debug] Step graph" in l and "found in the plan cache" in l for l in lines)  # a hit, at debug
    text = log_file.read_text()
    assert "compiled in" in text and "found in the plan cache" in text


def test_log_level_info_hides_debug(tmp_path):
    proc = run_python(STEPS, env={"MOREH_LOG_LEVEL": "info", "MOREH_LOG_FILE": str(tmp_path / "l.log")})
    assert proc.returncode == 0, proc.stderr
    assert "[debug]" not in proc.stderr and "[info] Step graph" in proc.stderr


def test_bad_log_level_is_rejected():
    proc = run_python("import torch", env={"MOREH_LOG_LEVEL": "loud"})
    assert proc.returncode != 0 and "MOREH_LOG_LEVEL='loud' is not valid" in proc.stderr


def test_the_default_log_file_of_a_reused_pid_starts_empty(tmp_path):
    """~/.moreh/logs/moreh-<pid>.log belongs to this process: an earlier process that had the same pid does not
    leave its lines in it (a test reading a run's log once read another run's there)."""
    code = r"""
import os
path = os.path.join(os.environ["HOME"], ".moreh", "logs", "moreh-%d.log" % os.getpid())
os.makedirs(os.path.dirname(path), exist_ok=True)
with open(path, "w") as f:
    f.write("a line of a dead process that had this pid\n")
import torch
torch.ones(2).to("moreh").sum().item()
assert torch.moreh.log_file() == path, torch.moreh.log_file()
print(path)
"""
    proc = run_python(code, env={"HOME": str(tmp_path), "MOREH_CONFIG_DIR": str(tmp_path / "cfg")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(proc.stdout.strip().splitlines()[-1]) as f:  # flushed when the process ended
        log = f.read()
    assert "dead process" not in log and "moreh log file" in log, log
