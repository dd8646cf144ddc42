"""Flavors: the virtual device spans N physical devices, chosen by MOREH_FLAVOR / MOREH_NUM_DEVICES or by
moreh-switch-model (persisted in $MOREH_CONFIG_DIR/config)."""
import json
import os

import pytest

from conftest import run_python
from tools_helpers import run_tool, tool_env

REPORT = """
import json, torch
x = torch.arange(6.0, device="moreh") * 2
p = torch.moreh.get_device_properties()
print(json.dumps({"sum": x.sum().item(), "count": torch.moreh.device_count(), "name": torch.moreh.get_device_name(),
                  "flavor": p.flavor, "n": p.num_physical_devices, "total": p.total_memory,
                  "mem_total": torch.moreh.mem_get_info()[1], "source": torch.moreh.flavor()[1],
                  "physical": [d["name"] for d in torch.moreh.physical_devices()]}))
"""
GiB = 1 << 30


def report(tmp_path, **env):
    proc = run_python(REPORT, env=tool_env(tmp_path, **env))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_flavor_from_environment_spans_its_devices(tmp_path):
    r = report(tmp_path, MOREH_FLAVOR="Large.256GB", MOREH_HOST_MEMORY_CAPACITY="1GiB")
    assert r["sum"] == 30.0 and r["count"] == 1 and r["name"] == "MoAI Accelerator"
    assert (r["flavor"], r["n"], r["source"]) == ("Large.256GB", 4, "MOREH_FLAVOR")
    assert r["total"] == r["mem_total"] == 4 * GiB  # MOREH_HOST_MEMORY_CAPACITY is per device
    assert r["physical"] == ["host:0", "host:1", "host:2", "host:3"]


def test_default_is_one_device_and_num_devices_names_the_flavor(tmp_path):
    r = report(tmp_path)
    assert (r["flavor"], r["n"], r["source"]) == ("Small.64GB", 1, "default")
    assert report(tmp_path, MOREH_NUM_DEVICES="8")["flavor"] == "xLarge.512GB"
    r = report(tmp_path, MOREH_NUM_DEVICES="3")
    assert (r["flavor"], r["n"]) == ("Custom.192GB", 3)


def test_bad_choices_stop_the_import_with_clear_errors(tmp_path):
    proc = run_python("import torch", env=tool_env(tmp_path, MOREH_FLAVOR="Huge.1GB"))
    assert proc.returncode != 0
    assert "MOREH_FLAVOR='Huge.1GB' is not a flavor" in proc.stderr and "48xLarge.24576GB" in proc.stderr
    proc = run_python("import torch", env=tool_env(tmp_path, MOREH_FLAVOR="xLarge.512GB", MOREH_NUM_DEVICES="4"))
    assert proc.returncode != 0 and "MOREH_NUM_DEVICES='4'" in proc.stderr and "set only one" in proc.stderr
    proc = run_python("import torch", env=tool_env(tmp_path, MOREH_NUM_DEVICES="zero"))
    assert proc.returncode != 0 and "MOREH_NUM_DEVICES='zero' is not valid" in proc.stderr


def test_switch_persists_and_environment_still_wins(tmp_path):
    proc = run_tool("moreh_switch_model", "--set", "xLarge.512GB", config_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == 'The MoAI Accelerator model is successfully switched to  "xLarge.512GB".'
    r = report(tmp_path)
    assert (r["flavor"], r["n"], r["source"]) == ("xLarge.512GB", 8, str(tmp_path / "config"))
    assert report(tmp_path, MOREH_FLAVOR="Medium.128GB")["n"] == 2
    proc = run_tool("moreh_switch_model", "--set", "2", config_dir=tmp_path)  # by menu number
    assert proc.returncode == 0 and report(tmp_path)["flavor"] == "Medium.128GB"
    assert run_tool("moreh_switch_model", "--current", config_dir=tmp_path).stdout.strip() == "Medium.128GB"
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ["config"]  # no temporary left


def test_switch_rejects_unknown_flavors_and_keeps_the_choice(tmp_path):
    run_tool("moreh_switch_model", "--set", "Large.256GB", config_dir=tmp_path)
    for bad in ("Huge.1GB", "14", "0"):
        proc = run_tool("moreh_switch_model", "--set", bad, config_dir=tmp_path)
        assert proc.returncode == 2 and f'"{bad}" is not a flavor' in proc.stderr
    assert "flavor = Large.256GB" in (tmp_path / "config").read_text()


def test_list_marks_the_current_flavor(tmp_path):
    out = run_tool("moreh_switch_model", "--list", config_dir=tmp_path).stdout.splitlines()
    assert out[0] == "Current MoAI Accelerator: Small.64GB"
    assert out[2:] == ["1. Small.64GB  *", "2. Medium.128GB", "3. Large.256GB", "4. xLarge.512GB", "5. 1.5xLarge.768GB",
                       "6. 2xLarge.1024GB", "7. 3xLarge.1536GB", "8. 4xLarge.2048GB", "9. 6xLarge.3072GB",
                       "10. 8xLarge.4096GB", "11. 12xLarge.6144GB", "12. 24xLarge.12288GB", "13. 48xLarge.24576GB"]


def test_interactive_menu_switches_redraws_and_quits(tmp_path):
    proc = run_tool("moreh_switch_model", config_dir=tmp_path, input="3\nq\n")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.count("Selection (1-13, q, Q): ") == 2
    first, second = out.split('The MoAI Accelerator model is successfully switched to  "Large.256GB".')
    assert "Current MoAI Accelerator: Small.64GB" in first and "1. Small.64GB  *" in first
    assert "Current MoAI Accelerator: Large.256GB" in second and "3. Large.256GB  *\n" in second
    assert "1. Small.64GB\n" in second
    assert "flavor = Large.256GB" in (tmp_path / "config").read_text()


def test_interactive_menu_reprompts_on_bad_input_and_ends_at_eof(tmp_path):
    proc = run_tool("moreh_switch_model", config_dir=tmp_path, input="abc\n42\n")
    assert proc.returncode == 0, proc.stderr
    assert 'Invalid selection "abc"' in proc.stdout and 'Invalid selection "42"' in proc.stdout
    assert proc.stdout.count("Selection (1-13, q, Q): ") == 3
    assert not (tmp_path / "config").exists()


def test_corrupt_config_file_is_named(tmp_path):
    (tmp_path / "config").write_text("flavor = Enormous\n")
    proc = run_python("import torch", env=tool_env(tmp_path))
    assert proc.returncode != 0 and str(tmp_path / "config") in proc.stderr and "Enormous" in proc.stderr
    proc = run_tool("moreh_switch_model", "--list", config_dir=tmp_path)
    assert proc.returncode == 2 and str(tmp_path / "config") in proc.stderr
    proc = run_tool("moreh_smi", config_dir=tmp_path)
    assert proc.returncode == 2 and str(tmp_path / "config") in proc.stderr


def _corrupt(tmp_path, kind):
    path = tmp_path / "config"
    if kind == "random bytes":
        path.write_bytes(bytes((i * 167 + 13) & 0xFF for i in range(512)))
    elif kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    return path


@pytest.mark.parametrize("kind", ["random bytes", "directory", "fifo"])
def test_unreadable_config_is_named_and_set_replaces_it(tmp_path, kind):
    """Every tool names the file and says what is wrong, in text (no UnicodeDecodeError, no hang on a FIFO, no
    directory silently ignored), and moreh-switch-model --set, which the error recommends, replaces it."""
    path = _corrupt(tmp_path, kind)
    for tool in ("moreh_smi", "moreh_switch_model"):
        proc = run_tool(tool, *(["--list"] if tool == "moreh_switch_model" else []), config_dir=tmp_path, timeout=30)
        assert proc.returncode == 2, proc.stderr
        assert str(path) in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    proc = run_python("import torch", env=tool_env(tmp_path), timeout=60)
    assert proc.returncode != 0 and str(path) in proc.stderr and "UnicodeDecodeError" not in proc.stderr
    if kind == "directory":  # nothing to replace safely: the error says to remove it
        proc = run_tool("moreh_switch_model", "--set", "Medium.128GB", config_dir=tmp_path)
        assert proc.returncode == 2 and str(path) in proc.stderr
        return
    proc = run_tool("moreh_switch_model", "--set", "Medium.128GB", config_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "replacing" in proc.stderr
    assert path.read_text().splitlines()[-1] == "flavor = Medium.128GB"
    assert run_tool("moreh_switch_model", "--current", config_dir=tmp_path).stdout.strip() == "Medium.128GB"


def test_byte_order_mark_is_accepted(tmp_path):
    (tmp_path / "config").write_bytes(b"\xef\xbb\xbfflavor = Large.256GB\n")
    proc = run_tool("moreh_switch_model", "--current", config_dir=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "Large.256GB", proc.stderr
