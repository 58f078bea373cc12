"""In which metric a layer's reconstruction error is measured: folding a following BatchNormalization.

RMT-KD replaces a layer's pre-activations `h` by their rank-k PCA
reconstruction. What the rest of the network sees, though, is not always `h`.
When a BatchNormalization directly and solely consumes a linear Dense/Conv2D
output (`following_batchnorm` in `rmtkd_tf.model_walk`), in inference mode it
computes `(h − m) D + β` per channel with

    D = diag(γ / sqrt(moving_variance + ε))        (γ = 1 when scale=False)

so the error that reaches the next layer is `(ĥ − h) D`. Channels with a
small `D` barely matter after BN, channels with a large one matter a lot; the
plain PCA of `Σ` treats them alike. `output_weighting(layer)` returns the
scale `|D|` and `rmtkd_tf.selection.decide_ranks` then analyses `D Σ D`
(metric `"post-batchnorm"`): its eigenvalues are post-BN variances, so the
rank rule and "error = sum of the dropped eigenvalues" speak of post-BN
error, and `project_kernel` builds the oblique rank-k factors that are optimal
in that metric (`rmtkd_tf.factorization`), exact at full rank. The sign of
`γ` does not change the projector, hence `|D|`; channels with `|D|` below
`1e-3 · max|D|` (γ ≈ 0: nearly dead after BN) are raised to that floor so
`D⁻¹` in the up-projection stays well-conditioned, which changes the metric
only where the error is invisible anyway.

`D` is the *inference-mode* scale of the model being reduced: it is what the
accuracy right after surgery sees. Fine-tuning in training mode makes BN use
batch statistics and updates its moving statistics; the fold does not try to
anticipate that.

Where it does not apply (metric `"pre-activation"`, the unweighted `Σ`, with
a note saying why when a BatchNormalization is nearby):

- a nonlinearity between the layer and its BN (Conv2D with `activation="relu"`,
  or a ReLU layer before the BN): no fixed diagonal carries the error through
  the nonlinearity;
- the layer's output also feeds another layer, or the BN normalises another
  axis;
- a BN in an enclosing model after a nested model's last layer (not looked for).

**Factorized layers** (`LowRankDense`/`LowRankConv2D` reduced again) are
analysed through their bottleneck `z = x·down` (metric `"bottleneck"`) and are
not weighted again, because after a folded first cut the bottleneck already
*is* in post-BN coordinates: `down = W D V` makes `z = (h − b) D V`, the kept
post-BN directions with orthonormal `V`, so the covariance of `z` is
`Vᵀ D Σ D V` (the kept post-BN variances) and an error `e` in `z` reaches the
BN output as `e·up·D = e Vᵀ`, of the same norm. The bottleneck analysis is then
the post-BN one, in the same units as the first (so a noise level carried over
from it, `decide_ranks(noise_priors=...)`, still applies). This holds for the
weights the cut produced; fine-tuning moves `up` and the BN statistics away
from it, exactly as it moves `up` away from orthonormal in the unweighted
case. Weighting the bottleneck by the current `up·D` instead would be the
non-diagonal metric `up D² upᵀ` (a Cholesky factor and a non-diagonal oblique
projector), which is not implemented.

**LayerNorm-fed transformer projections** (keras-hub `TransformerEncoder`) get
no weighting, on purpose:

- `attention_output` and `ffn_output` feed `y = residual + dropout(out)` and,
  in the default post-LN encoder (`normalize_first=False`, BERT/MiniLM), then
  `LN(y) = γ ⊙ (y − mean(y)) / std(y) + β` over the token's channels. An error
  `e` in the projection's output reaches `y` unchanged (the residual adds to
  the value, not to the error); to first order the LN output moves by
  `γ ⊙ (I − 11ᵀ/d − ŷŷᵀ/d) e / std(y)`. Three of those four factors are not a
  fixed channel diagonal: `std(y)` is a per-token scalar that depends on the
  residual stream (a per-*sample* weight on the covariance, which the
  collection does not record), `ŷŷᵀ` is a per-token rank-one term, and the
  centring `I − 11ᵀ/d` is singular (an error along `1` costs nothing, so there
  is no `D⁻¹`). Weighting by `γ` alone would be exact only if every token had
  the same `std(y)` and ignored the centring; that is a guess, so it is not
  done. In a pre-LN encoder (`normalize_first=True`) these outputs join the
  residual stream and meet a LayerNorm only in a later block, after other
  additions: nothing folds.
- `ffn_intermediate` is followed by the FFN activation (GELU): nonlinear,
  like Conv2D→ReLU→BN.
- `attention_query`/`attention_key`/`attention_value`: the LayerNorm (pre-LN)
  or the residual stream (post-LN) is their *input*; it shapes `Σ` already and
  needs no fold. Their error matters in the attention logits `QKᵀ` (Q and K
  jointly, a bilinear form) and, for V, through the attention weights and the
  output projection (`W_o W_oᵀ` per head, mixed across tokens): neither is a
  per-channel diagonal of their own output.

The transformer parts are therefore analysed on their own output covariance
(tokens as samples), as before.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from rmtkd_tf.model_walk import following_batchnorm

PRE_ACTIVATION = "pre-activation"
POST_BATCHNORM = "post-batchnorm"
BOTTLENECK = "bottleneck"

# Channels whose BN scale is below this fraction of the largest are raised to it (see the module docstring).
SCALE_FLOOR = 1e-3


@dataclasses.dataclass(frozen=True)
class OutputWeighting:
    """The metric a layer's error is measured in: its name, the per-channel scale (None: unweighted), and why."""

    metric: str
    scale: np.ndarray | None = dataclasses.field(default=None, repr=False)
    note: str | None = None


def batchnorm_channel_scale(batchnorm, floor=SCALE_FLOOR):
    """`|γ| / sqrt(moving_variance + ε)` per channel (γ = 1 when `scale=False`), floored at `floor · max`.

    Returns None when no channel has a positive finite scale.

    >>> bn = keras.layers.BatchNormalization(epsilon=0.0)
    >>> bn.build((None, 3))
    >>> bn.set_weights([np.array([2.0, -1.0, 0.0]), np.zeros(3), np.zeros(3), np.array([4.0, 1.0, 1.0])])
    >>> batchnorm_channel_scale(bn).tolist()
    [1.0, 1.0, 0.001]
    """
    variance = keras.ops.convert_to_numpy(batchnorm.moving_variance).astype(np.float64)
    gamma = np.ones_like(variance)
    if batchnorm.scale:
        gamma = keras.ops.convert_to_numpy(batchnorm.gamma).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.abs(gamma) / np.sqrt(variance + float(batchnorm.epsilon))
    if not np.all(np.isfinite(scale)) or scale.max() <= 0:
        return None
    return np.maximum(scale, floor * scale.max())


def output_weighting(layer, fold_batchnorm=True):
    """How `decide_ranks` should weigh `layer`'s error (see the module docstring).

    Args:
        layer: a candidate layer (Dense, Conv2D, factorized, or a transformer part).
        fold_batchnorm: False analyses every layer unweighted (the pre-fold behaviour).

    Returns:
        an `OutputWeighting`.

    >>> inputs = keras.Input((4,))
    >>> x = keras.layers.Dense(3, name="dense")(inputs)
    >>> model = keras.Model(inputs, keras.layers.BatchNormalization(name="bn")(x))
    >>> output_weighting(model.get_layer("dense"))
    OutputWeighting(metric='post-batchnorm', note="folds BatchNormalization 'bn'")
    >>> output_weighting(model.get_layer("dense"), fold_batchnorm=False).metric
    'pre-activation'
    """
    if hasattr(layer, "bottleneck"):
        bn, _ = following_batchnorm(layer)
        note = None
        if bn is not None and fold_batchnorm:
            note = f"bottleneck analysed as it is; BatchNormalization '{bn.name}' is not folded again (see rmtkd_tf.output_weighting)"
        return OutputWeighting(BOTTLENECK, None, note)
    if not fold_batchnorm:
        return OutputWeighting(PRE_ACTIVATION)
    bn, why = following_batchnorm(layer)
    if bn is None:
        return OutputWeighting(PRE_ACTIVATION, None, why)
    scale = batchnorm_channel_scale(bn)
    if scale is None:
        return OutputWeighting(PRE_ACTIVATION, None, f"BatchNormalization '{bn.name}' has no positive finite scale")
    return OutputWeighting(POST_BATCHNORM, scale, f"folds BatchNormalization '{bn.name}'")
