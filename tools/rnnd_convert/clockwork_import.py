"""rnnd_modules.clockwork.Clockwork (tools/rnnd_modules) -> a Model of "clockwork" layers.

The module is recognised by its rnnd_type attribute, not by a graph analysis of forward():
its loop (a mask per step) is not one of the patterns torch_graph.py allows, and need not be,
since its equations are the layer's own. Verification still runs it against the written file.
"""
import numpy as np

from .arch import ACTIVATIONS, Layer, Model, f32, make_act
from .errors import ConvertError


def is_clockwork(module):
    return getattr(module, "rnnd_type", None) == "clockwork"


def model_from_clockwork(module, input=None, head=None, norm=None):
    """The Model of a Clockwork module: its layers in order, vectors in, no head."""
    if input not in (None, "vectors", module.input_size) or head not in (None, False) or \
            norm not in (None, "none"):
        raise ConvertError("a Clockwork module converts alone (vectors in, its last layer's h "
                           "out): input=, head= and norm= do not apply")
    from .torch_import import _np
    op = {"tanh": "Tanh", "relu": "Relu", "softsign": "Softsign"}.get(module.activation)
    if op not in ACTIVATIONS:
        raise ConvertError("Clockwork activation %r has no rnnd equivalent" % module.activation)
    m = Model()
    m.input_dim = int(module.input_size)
    for l in range(module.num_layers):
        L = Layer("clockwork", int(module.hidden_size), periods=list(module.periods),
                  activations=[[make_act(op)]])
        W, R, Wb, Rb = module.weights(l)
        L.weights = [{"W": f32(_np(W)), "R": f32(_np(R)), "Wb": f32(_np(Wb)),
                      "Rb": f32(_np(Rb))}]
        m.layers.append(L)
    return m


def clockwork_runner(module):
    """x [B, T, dim] (NumPy) -> the module's outputs [B, T, H] as float64, eval mode."""
    import torch

    def run(x):
        was = module.training
        module.eval()
        try:
            with torch.no_grad():
                y, _ = module(torch.from_numpy(np.ascontiguousarray(x)).float())
        finally:
            module.train(was)
        return y.double().numpy()
    return run
