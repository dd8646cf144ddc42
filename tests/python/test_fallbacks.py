"""Ops the recorder cannot take as they are: no Meta kernel (run eagerly, warned once), no CPU kernel
(a clear error naming the op, and nothing else breaks)."""
import pytest
import torch

from conftest import run_python


def test_op_without_meta_kernel_runs_eagerly_and_warns_once():
    proc = run_python(
        "import torch\n"
        "x = torch.tensor([-2.0, 1.0, 3.0])\n"
        "m = x.to('moreh')\n"
        "a = torch.ops.aten._add_relu.Scalar(m, 1.0)\n"   # no Meta kernel
        "b = torch.ops.aten._add_relu.Scalar(m, 2.0)\n"
        "assert a.device.type == 'moreh'\n"
        "assert a.cpu().tolist() == [0.0, 2.0, 4.0] and b.cpu().tolist() == [0.0, 3.0, 5.0]\n"
        "assert torch.moreh.graph_stats()['eager_ops'] >= 2\n")
    assert proc.returncode == 0, proc.stderr
    warnings = [l for l in proc.stderr.splitlines() if "[warning]" in l and "aten::_add_relu.Scalar" in l]
    assert len(warnings) == 1, proc.stderr
    assert "has no Meta kernel" in warnings[0]


lib = torch.library.Library("moreh_test", "DEF")
lib.define("cuda_only(Tensor x) -> Tensor")
lib.impl("cuda_only", lambda x: x.clone(), "CUDA")
lib.impl("cuda_only", lambda x: torch.empty_like(x), "Meta")


def test_op_with_no_cpu_kernel_is_a_clear_error_and_loses_nothing():
    x = torch.arange(4.0).to("moreh")
    y = x * 2
    with pytest.raises(NotImplementedError, match="moreh does not support moreh_test::cuda_only"):
        torch.ops.moreh_test.cuda_only(y)
    assert y.cpu().tolist() == [0.0, 2.0, 4.0, 6.0]
    assert (y + 1).sum().item() == 16.0
