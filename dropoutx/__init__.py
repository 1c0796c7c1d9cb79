"""dropoutx: dropout transforms for JAX, with Flax Linen and NNX modules.

Every function is pure: it takes an explicit PRNG key and returns the masked
or noised activations in the input's dtype. ``rate`` is always the probability
of dropping a unit.
"""

from dropoutx._alpha import alpha_dropout as alpha_dropout
from dropoutx._attention import dot_product_attention as dot_product_attention
from dropoutx._bernoulli import annealed_dropout as annealed_dropout
from dropoutx._bernoulli import drop_path as drop_path
from dropoutx._bernoulli import dropout as dropout
from dropoutx._bernoulli import inverted_dropout as inverted_dropout
from dropoutx._bernoulli import keep_mask as keep_mask
from dropoutx._bernoulli import spatial_dropout as spatial_dropout
from dropoutx._bernoulli import vanilla_dropout as vanilla_dropout
from dropoutx._gaussian import gaussian_dropout as gaussian_dropout
from dropoutx._gaussian import gaussian_noise as gaussian_noise
from dropoutx._mc_predict import mc_predict as mc_predict
from dropoutx._sharding import shard_key as shard_key
from dropoutx._structured import drop_block as drop_block
from dropoutx._structured import layer_drop as layer_drop
from dropoutx._structured import zoneout as zoneout
from dropoutx._validate import KeyLike as KeyLike

__version__ = "0.1.0"

__all__ = (
    "KeyLike",
    "alpha_dropout",
    "annealed_dropout",
    "dot_product_attention",
    "drop_block",
    "drop_path",
    "dropout",
    "gaussian_dropout",
    "gaussian_noise",
    "inverted_dropout",
    "keep_mask",
    "layer_drop",
    "mc_predict",
    "shard_key",
    "spatial_dropout",
    "vanilla_dropout",
    "zoneout",
)
