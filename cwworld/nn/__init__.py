"""Building blocks of the Clockwork VAE: conv encoder/decoder, RSSM cell."""

from .conv import MLP, ConvDecoder, ConvEncoder
from .init import tf_init_
from .rssm import RSSMCell

__all__ = ["ConvDecoder", "ConvEncoder", "MLP", "RSSMCell", "tf_init_"]
