"""Finding the residual blocks of a functional model's layer graph.

Used by `keras_regkit.residual`. A residual merge is an `Add` layer, or a
`x + y` operation (ConvNeXt's blocks), with two inputs of which one is the
shortcut: one input is an ancestor of the other (`x + F(x)`, identity), or
both come from one tensor (the fork) and one path is shorter (a projection).
The graph is read from `_graph.levels(...)` (the node table that `_graph`
builds from `KerasTensor._keras_history`); nothing is changed here.
"""

import collections

import keras

from keras_regkit import _private_api
from keras_regkit.dropout import CONVOLUTIONS
from keras_regkit.layers import DropPath


# Layers that continue a convolution's "group": conv -> norm -> activation.
GROUP_FOLLOWERS = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.PReLU,
    keras.layers.Softmax,
)

# One residual merge of a level: `key` its graph node, `branch`/`shortcut` the
# node keys of its inputs, at tensor positions `branch_at`/`shortcut_at`;
# `fork` the node both paths start from.
Merge = collections.namedtuple(
    "Merge", ["level", "key", "op", "branch", "shortcut", "branch_at",
              "shortcut_at", "fork", "projection", "skip"])


def is_add(op):
    """Whether the graph operation `op` is an `Add` layer or a `x + y` operation."""
    if isinstance(op, keras.layers.Add):
        return True
    # `x + y` on symbolic tensors is a `keras.ops` operation, whose class is
    # not public API: recognized by name, as `_graph` recognizes `Functional`.
    return (not isinstance(op, keras.layers.Layer) and type(op).__name__ == "Add"
            and type(op).__module__.startswith("keras"))


def topological(level):
    """The node keys of `level`, parents before children."""
    order, done = [], set()
    for start in level.nodes:
        stack = [(start, False)]
        while stack:
            key, expanded = stack.pop()
            if key in done:
                continue
            if expanded:
                done.add(key)
                order.append(key)
                continue
            stack.append((key, True))
            stack.extend((parent, False) for parent in reversed(level.nodes[key][1])
                         if parent not in done)
    return order


def output(level, key):
    """The (first) output tensor of node `key` of `level`."""
    op = level.nodes[key][0]
    return _private_api.inbound_node(op, key[1]).output_tensors[0]


def merges(levels):
    """Every `Add` merge of the model, in depth order, as `Merge`s."""
    by_model = {id(level.model): level for level in levels}
    found, visited = [], set()

    def visit(level):
        visited.add(id(level.model))
        order = topological(level)
        depth, ancestors = {}, {}
        for key in order:
            parents = level.nodes[key][1]
            depth[key] = 1 + max((depth[p] for p in parents), default=-1)
            ancestors[key] = {key}.union(*(ancestors[p] for p in parents))
        calls = collections.Counter(id(level.nodes[key][0]) for key in order)
        for key in order:
            op = level.nodes[key][0]
            if id(op) in by_model and id(op) not in visited:
                visit(by_model[id(op)])
            elif is_add(op):
                found.append(analyze(level, key, depth, ancestors, calls[id(op)]))

    visit(levels[0])
    return found


def analyze(level, key, depth, ancestors, calls):
    """The `Merge` of the Add node `key`; `skip` says why it is not residual."""
    op, parents = level.nodes[key]

    def merge(skip="", branch_at=None, fork=None):
        if skip:
            return Merge(level, key, op, None, None, None, None, None, False, skip)
        branch_key, shortcut_key = parents[branch_at], parents[1 - branch_at]
        return Merge(level, key, op, branch_key, shortcut_key, branch_at, 1 - branch_at,
                     fork, fork != shortcut_key, "")

    if len(parents) != 2:
        return merge(f"has {len(parents)} inputs (a residual merge has two)")
    if calls > 1:
        return merge(f"is called {calls} times (a shared merge layer)")
    a, b = parents
    if a == b:
        return merge("adds a tensor to itself")
    if a in ancestors[b]:
        branch_at, fork = 1, a
    elif b in ancestors[a]:
        branch_at, fork = 0, b
    else:
        common = ancestors[a] & ancestors[b]
        if not common:
            return merge("its inputs share no ancestor (not a residual block)")
        fork = max(common, key=lambda k: depth[k])
        to_a, to_b = depth[a] - depth[fork], depth[b] - depth[fork]
        if to_a == to_b:
            return merge(f"both inputs are {to_a} layers from where they split: "
                         "no shortcut to tell from the branch")
        branch_at = 1 if to_a < to_b else 0
    if not keras.backend.is_float_dtype(output(level, parents[branch_at]).dtype):
        return merge("its branch is not a floating-point tensor")
    return merge(branch_at=branch_at, fork=fork)


def is_stochastic_depth(layer):
    """Whether `layer` drops its whole input per sample (a stochastic-depth layer).

    `DropPath`, `keras.applications.convnext`'s `StochasticDepth`, or a
    `Dropout` whose `noise_shape` is 1 on every axis but the batch axis.
    """
    if isinstance(layer, DropPath) or type(layer).__name__ == "StochasticDepth":
        return True
    shape = getattr(layer, "noise_shape", None)
    return (isinstance(layer, keras.layers.Dropout) and shape is not None and len(shape) > 1
            and all(size == 1 for size in tuple(shape)[1:]))


def branch(m):
    """The node keys of `m`'s branch: after the fork, up to the merge's input."""
    level, keys, stack = m.level, set(), [m.branch]
    while stack:
        key = stack.pop()
        if key in keys or key == m.fork:
            continue
        keys.add(key)
        stack.extend(level.nodes[key][1])
    # Paths that reach back beyond the fork (other inputs) are not the branch.
    beyond = set()
    stack = [m.fork]
    while stack:
        key = stack.pop()
        if key not in beyond:
            beyond.add(key)
            stack.extend(level.nodes[key][1])
    return [key for key in topological(level) if key in keys - beyond]


def group_ends(m, data_format):
    """Node keys after which DropBlock goes: the end of each conv group of the branch."""
    level, keys = m.level, branch(m)
    inside = set(keys)
    block_shape = spatial(output(level, m.key), data_format)
    by_op = {id(level.nodes[k][0]): k for k in keys}
    ends = []
    for key in keys:
        op = level.nodes[key][0]
        if not isinstance(op, CONVOLUTIONS):
            continue
        if any(s is not None and b is not None and s < b for s, b in
               zip(spatial(output(level, key), data_format), block_shape)):
            continue  # a map smaller than the block's: a gate, not a feature map
        end = key
        while True:
            followers = level.consumers.get(id(level.nodes[end][0]), [])
            if (len(followers) != 1 or not isinstance(followers[0], GROUP_FOLLOWERS)
                    or by_op.get(id(followers[0])) not in inside):
                break
            end = by_op[id(followers[0])]
        if end not in ends:
            ends.append(end)
    return ends


def spatial(tensor, data_format):
    """The spatial sizes of a feature map's shape."""
    shape = tuple(tensor.shape)
    return shape[1:-1] if data_format == "channels_last" else shape[2:]


def channels(tensor, data_format):
    """The channel count of a feature map."""
    return tensor.shape[-1] if data_format == "channels_last" else tensor.shape[1]
