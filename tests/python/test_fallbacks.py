"""Ops the recorder cannot take as they are: no Meta kernel (run eagerly, warned once), no CPU kernel
(a clear error naming the op, and nothing else breaks)."""
import copy

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


SPARSE_CASES = {
    "aten::_sparse_coo_tensor_with_dims_and_tensors": lambda: torch.eye(3).to_sparse().to("moreh"),
    "aten::_to_sparse": lambda: torch.eye(3, device="moreh").to_sparse(),
    "aten::_to_sparse_csr": lambda: torch.eye(3, device="moreh").to_sparse_csr(),
    "aten::add.Tensor": lambda: torch.eye(3, device="moreh") + torch.eye(3).to_sparse(),
    "aten::mm": lambda: torch.mm(torch.eye(3, device="moreh"), torch.eye(3).to_sparse()),
    "aten::empty.memory_format": lambda: torch.empty(3, layout=torch.sparse_coo, device="moreh"),
}


@pytest.mark.parametrize("op", list(SPARSE_CASES))
def test_sparse_tensors_are_a_clear_error_naming_the_op_and_lose_nothing(op):
    ref = torch.nn.Linear(3, 2)
    model = copy.deepcopy(ref).to("moreh")
    x = torch.arange(6.0).view(2, 3)
    for m, dev in ((ref, "cpu"), (model, "moreh")):
        m(x.to(dev)).sum().backward()  # on moreh, a step still in flight when the error comes
    with pytest.raises(NotImplementedError, match=f"moreh does not support torch.sparse_(coo|csr) tensors: {op} "):
        SPARSE_CASES[op]()
    for m in (ref, model):
        torch.optim.SGD(m.parameters(), lr=0.1).step()
    torch.testing.assert_close(model.weight.cpu(), ref.weight, rtol=0, atol=0)
    assert torch.eye(3, device="moreh").sum().item() == 3.0
