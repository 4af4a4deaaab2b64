"""Model files from outside are data, not programs: checks before anything is run.

A SavedModel is a TensorFlow program: a serving function may hold
`WriteFile`, `ReadFile`, `PyFunc` or any other op, and calling it (or just
loading it: `__saved_model_init_op` runs at load time) runs them.
`check_saved_model` reads `saved_model.pb` as a protocol buffer, without
TensorFlow running any of it, and refuses every op type that is not on an
allow-list of pure computation (math, NN, image, array and control-flow ops,
and reads and writes of the model's own variables): no file, process,
network, Python-callback or resource-I/O op. The checkpoint ops that every
SavedModel carries (`SaveV2`, `RestoreV2`, ...) are allowed only inside the
functions TensorFlow's saver writes, reached from the graph's `saver_def`,
never from a signature or the init op.

`check_export_hashes` compares the files of an export folder with the sizes
and sha256 digests its `metadata.json` recorded, so a changed or damaged file
is refused by name instead of giving confident wrong answers.

`.keras` files are left to Keras' safe mode (no `Lambda`, no module
references), and `.tflite` files run only builtin ops.
"""

import json
import os

from keras_cra.errors import ModelIntegrityError, UnsafeModelError, UsageError

# Pure computation: no op here reads or writes a file, starts a process, touches the
# network, calls back into Python, or reads a resource other than the model's variables.
_MATH = """Abs Acos Acosh Add AddN AddV2 All Any ApproximateEqual ArgMax ArgMin Asin Asinh Atan
Atan2 Atanh BatchMatMul BatchMatMulV2 BatchMatMulV3 Betainc BiasAdd BiasAddV1 Bitcast
BitwiseAnd BitwiseOr BitwiseXor Cast Ceil ClipByValue Complex ComplexAbs Conj Cos Cosh Cross
Cumprod Cumsum Digamma Div DivNoNan Einsum Elu Equal Erf Erfc Exp Expm1 Floor FloorDiv
FloorMod Gelu Greater GreaterEqual Igamma Igammac Imag Inv Invert IsFinite IsInf IsNan
LeakyRelu LeftShift Less LessEqual Lgamma Log Log1p LogSoftmax LogicalAnd LogicalNot
LogicalOr MatMul Max Maximum Mean Min Minimum Mod Mul MulNoNan Neg NextAfter NotEqual
PopulationCount Pow Prod Real RealDiv Reciprocal Relu Relu6 RightShift Rint Round Rsqrt
Select SelectV2 Selu Sigmoid Sign Sin Sinh Softmax Softplus Softsign Sqrt Square
SquaredDifference Sub Sum Tan Tanh TruncateDiv TruncateMod Xdivy Xlog1py Xlogy Zeta"""
_NN = """AvgPool AvgPool3D Conv Conv2D Conv3D Conv2DBackpropInput Conv3DBackpropInputV2
DepthwiseConv2dNative Dilation2D FusedBatchNorm FusedBatchNormV2 FusedBatchNormV3 InTopKV2
L2Loss LRN MaxPool MaxPool3D MaxPoolV2 MaxPoolWithArgmax NthElement TopK TopKV2
CombinedNonMaxSuppression NonMaxSuppression NonMaxSuppressionV2 NonMaxSuppressionV3
NonMaxSuppressionV4 NonMaxSuppressionV5 NonMaxSuppressionWithOverlaps"""
_IMAGE = """AdjustContrastv2 AdjustHue AdjustSaturation CropAndResize HSVToRGB ImageProjectiveTransformV2
ImageProjectiveTransformV3 ResizeArea ResizeBicubic ResizeBilinear ResizeNearestNeighbor RGBToHSV
ScaleAndTranslate"""
_ARRAY = """BatchToSpaceND BroadcastArgs BroadcastGradientArgs BroadcastTo CheckNumerics Concat
ConcatOffset ConcatV2 Const DepthToSpace Diag DiagPart DynamicPartition DynamicStitch Empty
EnsureShape ExpandDims ExtractImagePatches Fill Gather GatherNd GatherV2 Identity IdentityN
InvertPermutation LinSpace ListDiff MatrixBandPart MatrixDiag MatrixDiagPartV3 MatrixDiagV3
MirrorPad NoOp OneHot OnesLike Pack Pad PadV2 ParallelConcat Placeholder PlaceholderWithDefault
PreventGradient Range Rank Reshape ResourceGather ReverseSequence ReverseV2 Roll ScatterNd
SegmentMax SegmentMean SegmentMin SegmentProd SegmentSum Shape ShapeN Size Slice Snapshot
SpaceToBatchND SpaceToDepth Split SplitV Squeeze StopGradient StridedSlice TensorScatterAdd
TensorScatterMax TensorScatterMin TensorScatterSub TensorScatterUpdate Tile Transpose Unique
UniqueV2 Unpack UnsortedSegmentMax UnsortedSegmentMin UnsortedSegmentProd UnsortedSegmentSum
Where ZerosLike"""
_CONTROL = """If StatelessIf While StatelessWhile Case StatelessCase PartitionedCall
StatefulPartitionedCall Enter Exit LoopCond Merge NextIteration Switch
TensorListConcatV2 TensorListElementShape TensorListFromTensor TensorListGather
TensorListGetItem TensorListLength TensorListPopBack TensorListPushBack TensorListReserve
TensorListResize TensorListScatterIntoExistingList TensorListScatterV2 TensorListSetItem
TensorListSplit TensorListStack"""
# The model's own variables (created by the graph, never a handle to a file or a table).
_VARIABLES = """VarHandleOp ReadVariableOp AssignVariableOp AssignAddVariableOp
AssignSubVariableOp VarIsInitializedOp DestroyResourceOp DisableCopyOnRead"""
_RANDOM = """StatelessRandomNormalV2 StatelessRandomUniformV2 StatelessRandomUniformIntV2
StatelessRandomGetKeyCounter StatelessRandomGetAlg StatelessTruncatedNormalV2"""
ALLOWED_OPS = frozenset(
    " ".join((_MATH, _NN, _IMAGE, _ARRAY, _CONTROL, _VARIABLES, _RANDOM)).split())
# What TensorFlow's saver functions (reached only from `saver_def`) need to write and read
# the variables file; never allowed in a function a signature or the init op reaches.
CHECKPOINT_OPS = frozenset("""SaveV2 RestoreV2 MergeV2Checkpoints ShardedFilename StringJoin
StaticRegexFullMatch""".split())

_FUNCTION_ATTRS = ("f", "then_branch", "else_branch", "body", "cond", "branches")


def _called(node, library):
    """Names of the library functions that a node calls."""
    names = {node.op} & library.keys()
    for key, value in node.attr.items():
        if value.HasField("func"):
            names.add(value.func.name)
        names.update(f.name for f in value.list.func)
    return names


def _reach(roots, library):
    seen, todo = set(), [r for r in roots if r in library]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for node in library[name].node_def:
            todo.extend(_called(node, library) - seen)
    return seen


def saved_model_ops(path):
    """`{op type: first place it appears}` of everything a SavedModel's signatures, init op
    and objects can run, and the same for its saver functions (checkpoint I/O)."""
    from tensorflow.core.protobuf import saved_model_pb2

    pb = os.path.join(path, "saved_model.pb")
    saved = saved_model_pb2.SavedModel()
    try:
        with open(pb, "rb") as f:
            saved.ParseFromString(f.read())
    except OSError as e:
        raise UsageError(f"{pb} cannot be read ({e.strerror}). Received: model={path}") from e
    except Exception as e:  # protobuf's DecodeError
        raise UsageError(f"{pb} is not a SavedModel protocol buffer ({type(e).__name__}). "
                         f"Received: model={path}") from e
    runnable, saver = {}, {}
    for graph in saved.meta_graphs:
        library = {f.signature.name: f for f in graph.graph_def.library.function}
        saver_nodes = {t.split(":")[0].lstrip("^") for t in (
            graph.saver_def.save_tensor_name, graph.saver_def.restore_op_name) if t}
        top_runnable = [n for n in graph.graph_def.node if n.name not in saver_nodes]
        saver_roots = set().union(*[_called(n, library) for n in graph.graph_def.node
                                    if n.name in saver_nodes] or [set()])
        saver_only = _reach(saver_roots, library)
        # Every function not reached from the saver alone may be run by a loader or a call.
        others = _reach(set(library) - saver_only, library)
        others |= _reach(set().union(*[_called(n, library) for n in top_runnable] or [set()]),
                         library)
        for node in top_runnable:
            runnable.setdefault(node.op, f"graph node {node.name}")
        for name in sorted(library):
            target = runnable if name in others else saver
            for node in library[name].node_def:
                target.setdefault(node.op, f"function {name}, node {node.name}")
    return runnable, saver


def check_saved_model(path, flag="model"):
    """Refuses a SavedModel whose graphs hold any op outside the allow-list.

    Raises:
        UnsafeModelError: naming the first op type that is not allowed and where it is.
    """
    runnable, saver = saved_model_ops(path)
    for ops, allowed in ((runnable, ALLOWED_OPS), (saver, ALLOWED_OPS | CHECKPOINT_OPS)):
        bad = sorted(set(ops) - allowed)
        if bad:
            raise UnsafeModelError(
                f"{flag} is a SavedModel with op {bad[0]} ({ops[bad[0]]}"
                + (f"; also {', '.join(bad[1:6])}" if len(bad) > 1 else "")
                + "), which is not one of the pure computation ops a keras_cra export holds "
                "(a SavedModel is a program: such ops can read or write files, start "
                f"processes or call Python). Nothing of it was run. Received: {flag}={path}")
    return path


def load_saved_model(path, flag="model"):
    """`tf.saved_model.load` after `check_saved_model` (and the export's recorded hashes)."""
    import tensorflow as tf

    check_saved_model(path, flag)
    check_export_hashes(os.path.dirname(os.path.abspath(path)), flag, only=(path,))
    try:
        return tf.saved_model.load(path)
    except Exception as e:
        raise UsageError(f"{flag} is not a readable SavedModel ({type(e).__name__}: "
                         f"{' '.join(str(e).split())[:200]}). Received: {flag}={path}") from e


def recorded_hashes(folder):
    """`{path relative to folder: sha256}` from the `sha256` record of an export's
    `metadata.json` (`{artifact: digest}` for a file, `{artifact: {file: digest}}` for a
    folder), or `{}` where the folder records none."""
    try:
        with open(os.path.join(folder, "metadata.json")) as f:
            record = json.load(f).get("sha256")
    except (OSError, ValueError, AttributeError):
        return {}
    hashes = {}
    for rel, value in (record or {}).items() if isinstance(record, dict) else ():
        if isinstance(value, str):
            hashes[rel] = value
        elif isinstance(value, dict):
            hashes.update({k: v for k, v in value.items() if isinstance(v, str)})
    return hashes


def check_export_hashes(folder, flag="model", only=None):
    """Compares the files of an export folder with the sha256 digests its
    `metadata.json` recorded.

    Args:
        folder: the export folder.
        only: paths (files or folders) inside `folder`; only the recorded files under
            them are checked (default: every recorded file).

    Raises:
        ModelIntegrityError: naming the first file that is missing or differs.
    """
    from keras_cra.files import sha256_of

    wanted = None if only is None else [os.path.abspath(p) for p in only]
    for rel, digest in sorted(recorded_hashes(folder).items()):
        path = os.path.abspath(os.path.join(folder, rel))
        if wanted is not None and not any(
                path == w or path.startswith(w.rstrip(os.sep) + os.sep) for w in wanted):
            continue
        if not os.path.isfile(path):
            raise ModelIntegrityError(
                f"{path} is missing from the export, whose metadata.json records it. "
                f"Export the model again. Received: {flag}={folder}")
        if sha256_of(path) != digest:
            raise ModelIntegrityError(
                f"{path} is not the file the export wrote (its sha256 differs from the one "
                "in metadata.json: damaged or changed). Export the model again. "
                f"Received: {flag}={folder}")


def sha256_record(folder, artifacts):
    """The `sha256` record of `metadata.json` for `artifacts` (paths inside `folder`)."""
    from keras_cra.files import sha256_of

    hashes = {}
    for path in artifacts:
        rel = os.path.relpath(path, folder)
        if os.path.isdir(path):
            files = sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs)
            hashes[rel] = {os.path.relpath(p, folder): sha256_of(p) for p in files}
        else:
            hashes[rel] = sha256_of(path)
    return hashes
