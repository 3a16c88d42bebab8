"""Command line: rnnd-convert INPUT -o OUTPUT.rnnd [options]."""
import argparse
import os
import sys

from .errors import ConvertError, missing_module, printable

PROG = "rnnd-convert"
FORMATS = ("onnx", "torchscript", "native")


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # one line, like every other failure
        sys.stderr.write("%s: %s\n" % (PROG, message))
        sys.exit(2)


def _parser():
    p = _Parser(prog=PROG, description="Convert an ONNX, TorchScript or native (JSON + .npz) "
                "recurrent model to rnnd's .rnnd format (docs/convert.md).")
    p.add_argument("input", metavar="INPUT", help=".onnx, .pt/.pth (TorchScript) or .json")
    p.add_argument("-o", "--output", required=True, metavar="OUTPUT", help="the .rnnd to write")
    p.add_argument("--name", help="the model's name (default: OUTPUT's base name)")
    p.add_argument("--vocab", metavar="FILE",
                   help="vocabulary: one token per line, or a JSON list of strings")
    p.add_argument("--tokenizer", choices=("char", "byte"), help="how rnnd splits text")
    p.add_argument("--weights", metavar="FILE", help="native input: the .npz of tensors")
    p.add_argument("--weight-type", choices=("f32", "bf16", "f16", "int8"),
                   help="store the weight matrices as bfloat16 or float16 (rounded to "
                   "nearest even; about half the file and half the bytes read per step; "
                   "compute stays float), or int8 with a float scale per row (a quarter of "
                   "the bytes; integer products on inputs quantized per step: "
                   "docs/model-format.md, \"int8 weights\"). Default f32")
    p.add_argument("--format", choices=FORMATS, help="input format (default: by extension)")
    p.add_argument("--norm", choices=("none", "softmax", "log_softmax"),
                   help="override the head's normalisation")
    p.add_argument("--head", metavar="NAME",
                   help="TorchScript input: the nn.Linear submodule to use as the head, by "
                   "name, when there are several")
    p.add_argument("--trust-code", action="store_true",
                   help="load TorchScript whose code defines __setstate__ or calls from_file: "
                   "loading runs that code, so only for a file you trust")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the check that the written model computes what the source "
                   "computes (ONNX and TorchScript input; docs/convert.md \"Verification\")")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    return p


def detect_format(path):
    ext = os.path.splitext(path)[1].lower()
    if ext == ".onnx":
        return "onnx"
    if ext in (".pt", ".pth", ".ptl", ".jit", ".torchscript"):
        return "torchscript"
    if ext == ".json":
        return "native"
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return "onnx"           # the loader reports the missing file
    if head.startswith(b"PK"):
        return "torchscript"
    if head.lstrip().startswith(b"{"):
        return "native"
    return "onnx"


def load_model(path, fmt, weights=None, head=None):
    """(Model, run_source, source kind): RUN_SOURCE runs the input itself for the check at
    conversion (verify.py), None for a native spec, which has no source apart from the file."""
    if not os.path.exists(path):
        raise ConvertError("file not found")
    if weights is not None and fmt != "native":
        raise ConvertError("--weights is only for native (.json) input")
    if head is not None and fmt != "torchscript":
        raise ConvertError("--head is only for TorchScript input (an ONNX graph or a native "
                           "spec says which map is the head)")
    if fmt == "onnx":
        from . import onnx_import, onnx_run, onnx_state
        proto = onnx_import.read(path)
        why = onnx_import.spec_error(proto)     # on the graph as read, before the importer
        imp = onnx_import.Importer(proto)
        model = imp.run()
        if why is not None:
            # after the importer, whose refusals name the node and say what rnnd supports
            raise ConvertError(why)
        # state inputs read otherwise than in PyTorch's layout: refused, verified or not
        wires = onnx_state.wiring(proto, imp)
        return model, onnx_run.source_runner(proto, imp, wires), "onnx"
    if fmt == "torchscript":
        from . import torch_import
        model, module = torch_import.load_torchscript(path, head=head)
        run = torch_import.source_runner(module, model.pool != "none", model.source_features,
                                         getattr(model, "source_states", None))
        return model, run, "torchscript"
    from . import native
    return native.load(path, weights), None, "native"


def convert(input_path, output_path, *args, **kw):
    """Convert INPUT_PATH to OUTPUT_PATH (_convert's arguments); returns the written Model.
    Raises ConvertError. NumPy's RuntimeWarnings and Python warnings (torch's) are silenced
    for the whole conversion: the command line promises one line on stderr, and a value
    that overflows is refused where it matters (trial20 M1)."""
    import warnings
    import numpy as np
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return _convert(input_path, output_path, *args, **kw)


def _convert(input_path, output_path, fmt=None, name=None, vocab=None, tokenizer=None,
            weights=None, norm=None, weight_type=None, trust_code=False, verify=True,
            head=None):
    """Convert INPUT_PATH to OUTPUT_PATH; returns the written Model. Raises ConvertError.
    TRUST_CODE loads TorchScript whose code runs when it is loaded (docs/convert.md).
    VERIFY runs the source and the converted model on the same inputs first and refuses
    when they differ (verify.py); nothing is written then."""
    # numpy and the importers are imported here, not at the top, so that main() can report
    # a missing module in one line
    from . import sniff
    from .arch import apply_options, read_vocab
    from .writer import write
    fmt = fmt or detect_format(input_path)
    wrong = sniff.wrong_format(input_path, fmt)
    if wrong is not None:
        raise wrong
    if fmt != "native":
        sniff.check(input_path, output_path, trust_code)
    model, run_source, kind = load_model(input_path, fmt, weights, head)
    from .verify import metadata_value
    figures = None
    if verify and run_source is not None:
        from .verify import verify as check
        figures = check(model, run_source, kind, output_path)
    if name is None and not model.name:
        name = os.path.splitext(os.path.basename(output_path))[0]
    if isinstance(vocab, str):
        vocab = read_vocab(vocab)
    norm_checked = model.head_norm if model.head_W is not None else "none"
    apply_options(model, name=name, vocab=vocab, tokenizer=tokenizer, norm=norm,
                  weights=weight_type)
    write(model, output_path, verification=metadata_value(figures, model, norm_checked))
    return model


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        m = convert(args.input, args.output, fmt=args.format, name=args.name, vocab=args.vocab,
                    tokenizer=args.tokenizer, weights=args.weights, norm=args.norm,
                    weight_type=args.weight_type, trust_code=args.trust_code,
                    verify=not args.no_verify, head=args.head)
    except ConvertError as e:
        sys.stderr.write("%s: %s: %s\n" % (PROG, printable(e.path or args.input), e))
        if e.hint:
            sys.stderr.write(e.hint + "\n")
        return 1
    except ImportError as e:
        sys.stderr.write("%s: %s: %s\n" % (PROG, printable(args.input), missing_module(e)))
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as e:      # a bug: still one line, unless asked for the traceback
        if os.environ.get("RNND_CONVERT_DEBUG"):
            raise
        msg = str(e).splitlines()[0] if str(e) else ""
        sys.stderr.write("%s: %s: internal error: %s: %s\n"
                         % (PROG, printable(args.input), type(e).__name__, printable(msg)))
        return 1
    if not args.quiet:
        kinds = ", ".join("%s%s(H=%d%s%s)" % (L.type, "" if L.direction == "forward"
                                              else "/" + L.direction, L.hidden_size,
                                              ", proj %d" % L.proj_size
                                              if getattr(L, "proj_size", 0) else "",
                                              ", depth_gate"
                                              if getattr(L, "depth_gate", False) else "")
                          for L in m.layers)
        n = sum(int(a.size) for a in m.tensors().values())
        pool = "" if getattr(m, "pool", "none") == "none" else ", pool %s" % m.pool
        print("%s: %s input, layers %s%s, %s, %d parameters%s"
              % (args.output, m.input_kind, kinds, pool,
                 "head %s%d%s" % ("" if not m.head_layers else "of %d layers -> "
                                  % len(m.head_layers), m.output_dim(),
                                  "" if m.head_norm == "none" else " + " + m.head_norm)
                 if m.has_head() else "no head",
                 n, "" if m.weights == "f32" else ", %s weight matrices" % m.weights))
    return 0
