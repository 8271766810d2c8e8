"""The alcli strategy zoo (shipped as ``alcli.strategies``)."""
