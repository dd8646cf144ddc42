"""torch.compile on moreh: Dynamo captures the graph, moreh's lazy step graph runs it.

Inductor generates Triton or C++ kernels for CPU and CUDA devices only (with another device type it fails
with ``KeyError: 'moreh'``). moreh already records the whole training step and plans it (fusion on GPUs,
batch splitting, memory), so a graph Dynamo captures with moreh tensors is run as captured, op by op,
which records into the step graph exactly as eager mode does. What compile adds on moreh: Dynamo's graph
capture (less Python per step, graph breaks as usual); what it does not: Inductor's kernels. Graphs on CPU
or CUDA tensors still go to Inductor.
"""
import torch


def graph_uses_moreh(gm, example_inputs):
    """Whether any input or any value Dynamo traced in the graph is a moreh tensor."""
    def on_moreh(v):
        if isinstance(v, torch.Tensor):
            return v.device.type == "moreh"
        if isinstance(v, (list, tuple)):
            return any(on_moreh(x) for x in v)
        return False

    if any(on_moreh(t) for t in example_inputs):
        return True
    graph = getattr(gm, "graph", None)
    return graph is not None and any(on_moreh(node.meta.get("example_value")) for node in graph.nodes)


def install():
    wrapper = getattr(torch, "_TorchCompileInductorWrapper", None)
    if wrapper is None or getattr(wrapper.__call__, "moreh_aware", False):
        return
    inductor_call = wrapper.__call__

    def call(self, model_, inputs_):
        if graph_uses_moreh(model_, inputs_):
            return model_.forward  # the captured graph, run op by op: moreh records it
        return inductor_call(self, model_, inputs_)

    call.moreh_aware = True
    wrapper.__call__ = call
