"""rnnd_convert: write rnnd model files (.rnnd, docs/model-format.md) from ONNX, TorchScript,
a native JSON + .npz spec, or a live torch.nn.Module. See docs/convert.md.

    python3 -m rnnd_convert model.onnx -o model.rnnd

    import rnnd_convert
    rnnd_convert.from_module(net, "model.rnnd")
"""
from .cli import convert  # noqa: F401
from .errors import ConvertError  # noqa: F401

__all__ = ["ConvertError", "Model", "Layer", "convert", "from_module", "write_model"]


def from_module(module, path, *, input=None, head=None, norm=None, name=None, vocab=None,
                tokenizer=None, weights=None, verify=True):
    """Write MODULE (a torch.nn.Module holding nn.Embedding / nn.RNN / nn.LSTM / nn.GRU /
    nn.Linear submodules, or one of those itself; or the reference modules of
    tools/rnnd_modules (MinGRU, MinLSTM, SLSTM, Clockwork, DGLSTM) with an Embedding, a Linear
    and a softmax around them) to PATH as an .rnnd file.

    input: None (tokens if there is an nn.Embedding, else vectors), "tokens", "vectors", an
    int (the vector size, checked) or the nn.Embedding to use.
    head: None (the head forward() applies: one nn.Linear or an MLP of Linear, ReLU, Tanh,
    Sigmoid, GELU and LayerNorm; the one nn.Linear when forward() cannot be analysed), the
    nn.Linear (or its name) to use, or False.
    norm: None (the softmax / log_softmax forward() applies; for a module whose forward()
    is not analysed, a bare recurrent module or a reference module, its nn.Softmax /
    nn.LogSoftmax submodule's), "none", "softmax", "log_softmax"; a norm forward() does not
    apply is added (or dropped) as --norm does: checked without it, recorded as norm_checked.
    name, vocab (a list of strings or a file), tokenizer ("char" | "byte"), weights ("f32" |
    "bf16" | "f16" | "int8": the weight matrices' stored type).
    MODULE is converted as in eval mode (dropout off); one in train mode is converted so too,
    with a warning on stderr.
    verify: run MODULE (eval mode, no gradients) and the converted model on the same random
    inputs and refuse when they differ (docs/convert.md "Verification"); the figures go into
    the file. verify=False skips it, for a module whose forward() cannot be called on one
    input. Before that, forward() is scripted (or traced) and its graph checked against the
    patterns rnnd serves (torch_graph.py).
    Returns the Model written. Raises ConvertError when MODULE is not something rnnd serves."""
    import os
    from .arch import apply_options, read_vocab
    from .torch_import import model_from_module, source_runner
    from .torch_reference import check_chain, model_from_reference, reference_runner
    from .writer import write
    from .torch_slstm import model_from_slstm, slstm_runner
    from .torch_import import refuse_hooks, refuse_python_around, warn_train_mode
    from .verify import metadata_value

    def read(norm):
        # tools/rnnd_modules (MinGRU, MinLSTM, SLSTM, DGLSTM, ...) first: not PyTorch's own
        model = model_from_reference(module, input=input, head=head, norm=norm)
        runner = reference_runner(module) if model is not None else None
        if model is None:
            model = model_from_slstm(module, input=input, head=head, norm=norm)
            runner = slstm_runner(module) if model is not None else None
        door[0] = "reference" if model is not None else "torch"
        if model is None:
            model = model_from_module(module, input=input, head=head, norm=norm)
        return model, runner or source_runner(module, model.pool != "none",
                                              model.source_features,
                                              getattr(model, "source_states", None))

    door = [None]           # which door read the module: "reference" or "torch"
    refuse_hooks(module)    # every door below: module(x) runs them, the graph does not hold them
    refuse_python_around(module)    # and what a class runs around forward(), the same
    model, runner = read(norm)
    warn_train_mode(module)
    figures, norm_checked = None, None
    if verify:
        from .verify import verify as check
        try:
            figures = check(model, runner, "module", path)
        except ConvertError as e:
            # norm= may name the norm forward() applies (a softmax in a forward() that is
            # not analysed) or one to add or drop, as --norm does (docs/convert.md, Python
            # API): the module read without it, checked, and the norm applied after
            if norm is None or not str(e).startswith("verification failed"):
                raise
            try:
                model, runner = read(None)
                if (model.head_norm if model.head_W is not None else "none") == norm:
                    raise e
                figures = check(model, runner, "module", path)
            except ConvertError:
                raise e from None   # the check the caller asked for says what differs
            norm_checked = model.head_norm if model.head_W is not None else "none"
            apply_options(model, norm=norm)
    if door[0] == "reference":
        # forward() around a reference module is no graph torch_graph.py walks: it must be
        # a plain chain (issue 14, adversary 7, H5); after verification, whose refusal says
        # more where the two differ on its inputs
        check_chain(module)
    if name is None:
        name = os.path.splitext(os.path.basename(path))[0]
    if isinstance(vocab, str):
        vocab = read_vocab(vocab)
    apply_options(model, name=name, vocab=vocab, tokenizer=tokenizer, weights=weights)
    write(model, path, verification=metadata_value(figures, model, norm_checked))
    return model


def __getattr__(name):
    # Layer and Model need numpy: imported on first use, so that the command line (which
    # imports this package) can report a missing numpy in one line
    if name in ("Layer", "Model"):
        from . import arch
        return getattr(arch, name)
    raise AttributeError("module %r has no attribute %r" % (__name__, name))


def write_model(model, path):
    """Validate and write a Model built by hand (see arch.Layer / arch.Model)."""
    from .writer import write
    write(model, path)
    return model
