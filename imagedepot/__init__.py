"""imagedepot: image caches and VM images behind the cloud APIs people already script against."""

__version__ = "0.1.0"
