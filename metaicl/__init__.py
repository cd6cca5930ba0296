"""metaicl: how the pretraining data distribution and meta-training shape in-context learning.

Layers (a module imports only from layers before its own): metaicl.core -> pretrain_data ->
metaicl.{models,data,train,eval,experiment} -> cluster -> metaicl.cli.
"""
__version__ = "0.1.0"
