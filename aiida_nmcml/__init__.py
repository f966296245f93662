"""AiiDA plugin: a fine-tuned MACE potential for NMC811 cathodes and the Li diffusion it predicts."""

__version__ = '0.1.0'
