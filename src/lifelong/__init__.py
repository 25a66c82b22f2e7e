"""lifelong: continual learning on frozen pretrained models, measured with the field's protocol."""

__version__ = "0.1.0"
